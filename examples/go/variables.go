package main

import (
	"encoding/json"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// assign writes a response's variables into the journey's: each is a plain google.protobuf.Struct, so the
// engine needs none of the step's message types to store it.
func assign(vars map[string]any, assigned map[string]*structpb.Struct) {
	for name, value := range assigned {
		vars[name] = value.AsMap()
	}
}

func toJSON(value any) string {
	encoded, err := json.Marshal(value)
	if err != nil {
		return fmt.Sprintf("%v", value)
	}
	return string(encoded)
}

// describe turns a non-OK status into an error naming the code and every rich-error detail the service sends
// (google.rpc.BadRequest for INVALID_ARGUMENT, google.rpc.ErrorInfo for NOT_FOUND).
func describe(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	text := fmt.Sprintf("%s: %s", st.Code(), st.Message())
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				text += fmt.Sprintf("; field %s: %s", v.GetField(), v.GetDescription())
			}
		case *errdetails.ErrorInfo:
			text += fmt.Sprintf("; reason %s %v", d.GetReason(), d.GetMetadata())
		}
	}
	return fmt.Errorf("%s", text)
}
