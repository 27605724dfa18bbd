package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/grpc/metadata"
)

// journeyTrace makes the whole journey one W3C trace: every step call carries a `traceparent` header with
// the journey's trace id and a fresh parent id, the way a journey span's children would. The service's
// OpenTelemetry instrumentation continues the trace from that header. With OpenTelemetry in your engine,
// use otelgrpc.NewClientHandler instead and this disappears.
type journeyTrace struct {
	traceID string
}

func newTrace() journeyTrace {
	return journeyTrace{traceID: randomHex(16)}
}

// stepContext is the context of one step call: its deadline and its traceparent.
func (t journeyTrace) stepContext(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	traceparent := fmt.Sprintf("00-%s-%s-01", t.traceID, randomHex(8)) // version 00, sampled
	return metadata.AppendToOutgoingContext(ctx, "traceparent", traceparent), cancel
}

func randomHex(bytes int) string {
	buf := make([]byte, bytes)
	if _, err := rand.Read(buf); err != nil {
		panic(err) // crypto/rand never fails on a supported platform
	}
	return hex.EncodeToString(buf)
}
