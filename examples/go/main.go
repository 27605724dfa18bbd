// Command journey is an orchestrator running one "Cognito OTP" journey against the step service: Generate,
// the code the user typed (read here from the local emulator's outbox), a wrong code taking the failure
// branch and looping back to the code form, then the right code, with the step variables assigned from the
// responses. Copy it as the starting point of your own journey engine's step calls.
//
//	go run . -target 127.0.0.1:50051 -outbox http://127.0.0.1:4566/_outbox -identifier ada@example.com
//
// Every flag has an environment variable (OTP_STEP_TARGET, OTP_STEP_OUTBOX_URL, OTP_STEP_IDENTIFIER,
// OTP_STEP_CONNECTION, OTP_STEP_TIMEOUT, OTP_STEP_KEEPALIVE). Against a fleet, the target is a name that
// resolves to every instance: dns:///otp-steps.default.svc.cluster.local:50051 (a headless Service). It prints one line per step and exits 1 on anything a real journey
// would not expect here (a gRPC error, an abort, a wrong code accepted, the right one refused).
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	stepexecutorv1 "otpstepservice/client/go/stepexecutor/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// The journey's own names: the engine stores step results under these variables.
const (
	journeyID      = "jit-migration"
	outputVariable = "otp_result"
	errorVariable  = "otp_error"
	// Generate is retried here on a deadline: with the same step_execution_id a retry answers with the first
	// result instead of sending a second code (docs: "The contract"). UNAVAILABLE is retried by grpc-go itself,
	// from the service config (service_config.json). Nothing else is retried blindly.
	generateAttempts = 3
)

type config struct {
	target     string
	outboxURL  string
	identifier string
	connection string
	timeout    time.Duration
	keepalive  time.Duration
}

func main() {
	log.SetFlags(0)
	cfg := config{}
	flag.StringVar(&cfg.target, "target", env("OTP_STEP_TARGET", "127.0.0.1:50051"), "step service address (host:port)")
	flag.StringVar(&cfg.outboxURL, "outbox", env("OTP_STEP_OUTBOX_URL", "http://127.0.0.1:4566/_outbox"), "the emulator's outbox URL")
	flag.StringVar(&cfg.identifier, "identifier", env("OTP_STEP_IDENTIFIER", "ada@example.com"), "the user's email address")
	flag.StringVar(&cfg.connection, "connection", env("OTP_STEP_CONNECTION", "demo"), "the connection the steps name")
	timeout, err := time.ParseDuration(env("OTP_STEP_TIMEOUT", "10s"))
	if err != nil {
		log.Fatalf("OTP_STEP_TIMEOUT: %v", err)
	}
	flag.DurationVar(&cfg.timeout, "timeout", timeout, "deadline of each step call")
	pings, err := time.ParseDuration(env("OTP_STEP_KEEPALIVE", "30s"))
	if err != nil {
		log.Fatalf("OTP_STEP_KEEPALIVE: %v", err)
	}
	// The service accepts a ping every 20 s at most (OTP_STEP_MIN_CLIENT_PING_SECONDS); grpc-go sends none more
	// often than every 10 s whatever this says.
	flag.DurationVar(&cfg.keepalive, "keepalive", pings, "keepalive ping interval of an idle connection")
	flag.Parse()

	if err := run(cfg); err != nil {
		log.Printf("journey: FAILED: %v", err)
		os.Exit(1)
	}
}

//go:embed service_config.json
var serviceConfig string

func run(cfg config) error {
	// Plaintext on loopback for the local demo; use credentials.NewTLS for a deployed service.
	// The service config the Python client ships (service_config.json, kept identical to every other copy by
	// the repository's tests): round_robin over every address of the target (a dns:/// name of a headless
	// Service), waitForReady, and retries on UNAVAILABLE for the methods safe to repeat: GenerateOtp
	// (idempotent per journey run and step execution: a repeat answers with the code already sent, never sends
	// a second) and CheckConnection (it only reads). ValidateOtp is not retried: a Validate whose instance went
	// away after Cognito judged the code may have spent an attempt, and a blind repeat would spend another.
	// Keepalive pings every 30 s, on an idle connection too, which the service's enforcement (one per 20 s)
	// accepts.
	conn, err := grpc.NewClient(cfg.target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: cfg.keepalive, Timeout: 10 * time.Second, PermitWithoutStream: true,
		}),
	)
	if err != nil {
		return err
	}
	defer conn.Close()
	steps := stepexecutorv1.NewStepExecutorClient(conn)

	trace := newTrace()
	runID := "run-" + randomHex(8)
	vars := map[string]any{} // the journey's variables
	fmt.Printf("journey: run=%s trace_id=%s identifier=%s\n", runID, trace.traceID, cfg.identifier)

	step := &stepexecutorv1.StepConfiguration{
		Connection:          cfg.connection,
		UserIdentifier:      cfg.identifier,
		OtpChannel:          stepexecutorv1.OtpChannel_OTP_CHANNEL_EMAIL,
		Scopes:              []string{"openid", "profile", "email"},
		OutputVariable:      outputVariable,
		ErrorOutputVariable: errorVariable,
		FailureBehavior:     stepexecutorv1.FailureBehavior_FAILURE_BEHAVIOR_FAILURE_BRANCH,
	}

	// --- Step "send-code": Cognito OTP Generate.
	outbox := newOutbox(cfg.outboxURL, cfg.identifier, cfg.timeout)
	seen, err := outbox.count()
	if err != nil {
		return err
	}
	generate := &stepexecutorv1.GenerateOtpRequest{
		Journey: &stepexecutorv1.JourneyContext{
			JourneyId:       journeyID,
			JourneyRunId:    runID,
			StepId:          "send-code",
			StepExecutionId: runID + "/send-code/1", // one execution of the step, reused by its retries
		},
		Step: step,
	}
	var sent *stepexecutorv1.GenerateOtpResponse
	for attempt := 1; ; attempt++ {
		ctx, cancel := trace.stepContext(context.Background(), cfg.timeout)
		sent, err = steps.GenerateOtp(ctx, generate)
		cancel()
		if status.Code(err) == codes.DeadlineExceeded && attempt < generateAttempts {
			fmt.Printf("generate: deadline exceeded, retrying with the same step_execution_id (attempt %d)\n", attempt+1)
			continue
		}
		break
	}
	if err != nil {
		return fmt.Errorf("generate could not run: %w", describe(err))
	}
	assign(vars, sent.GetVariables())
	switch outcome := sent.GetOutcome().(type) {
	case *stepexecutorv1.GenerateOtpResponse_Success:
		fmt.Printf("generate: success medium=%s destination=%s max_attempts=%d\n",
			outcome.Success.GetDeliveryMedium(), outcome.Success.GetMaskedDestination(), outcome.Success.GetMaxAttempts())
	case *stepexecutorv1.GenerateOtpResponse_Failure:
		// The failure branch: a real journey would show "could not send a code" or retry later.
		return fmt.Errorf("generate took the failure branch: %s", failureLine(outcome.Failure))
	case *stepexecutorv1.GenerateOtpResponse_Abort:
		return fmt.Errorf("generate aborted the journey: client_error=%s", outcome.Abort.GetClientError().GetCode())
	default:
		return errors.New("generate answered without an outcome")
	}

	// --- Form step: the user types the code. Here: from the emulator's outbox, with a wrong one first.
	code, err := outbox.codeAfter(seen)
	if err != nil {
		return err
	}
	typed := []string{wrongCode(code), code}

	// --- Step "check-code": Cognito OTP Validate, looping back to the form on the failure branch.
	for i, otp := range typed {
		validate := &stepexecutorv1.ValidateOtpRequest{
			Journey: &stepexecutorv1.JourneyContext{
				JourneyId:       journeyID,
				JourneyRunId:    runID, // the run Generate ran in: the challenge is kept under it
				StepId:          "check-code",
				StepExecutionId: fmt.Sprintf("%s/check-code/%d", runID, i+1),
			},
			Step:    step,
			OtpCode: otp,
		}
		ctx, cancel := trace.stepContext(context.Background(), cfg.timeout)
		checked, err := steps.ValidateOtp(ctx, validate)
		cancel()
		if err != nil {
			// Not retried, neither here nor by grpc-go (the service config gives ValidateOtp no retryPolicy): a
			// Validate that timed out or lost its instance may already have been judged and spent an attempt.
			return fmt.Errorf("validate could not run: %w", describe(err))
		}
		assign(vars, checked.GetVariables())
		switch outcome := checked.GetOutcome().(type) {
		case *stepexecutorv1.ValidateOtpResponse_Success:
			if otp != code {
				return errors.New("validate accepted a wrong code")
			}
			s := outcome.Success
			fmt.Printf("validate: success sub=%s username=%s email=%v verified=%s\n",
				s.GetSub(), s.GetUsername(), s.GetClaims().AsMap()["email"], s.GetVerifiedMedium())
			result, _ := vars[outputVariable].(map[string]any)
			if result["sub"] != s.GetSub() {
				return fmt.Errorf("variable %s does not carry the sub: %v", outputVariable, result)
			}
			fmt.Printf("variable %s: %s\n", outputVariable, toJSON(vars[outputVariable]))
			fmt.Println("journey: completed")
			return nil
		case *stepexecutorv1.ValidateOtpResponse_Failure:
			f := outcome.Failure
			fmt.Printf("validate: failure %s\n", failureLine(f))
			fmt.Printf("variable %s: %s\n", errorVariable, toJSON(vars[errorVariable]))
			switch {
			case f.GetCode() == stepexecutorv1.FailureCode_FAILURE_CODE_INVALID_CODE && f.GetAttemptsRemaining() > 0:
				fmt.Printf("journey: failure branch -> back to the code form (%d attempts left)\n", f.GetAttemptsRemaining())
				continue
			case f.GetCode() == stepexecutorv1.FailureCode_FAILURE_CODE_ATTEMPTS_EXHAUSTED,
				f.GetCode() == stepexecutorv1.FailureCode_FAILURE_CODE_CHALLENGE_EXPIRED,
				f.GetCode() == stepexecutorv1.FailureCode_FAILURE_CODE_CHALLENGE_NOT_FOUND:
				return fmt.Errorf("the challenge is gone (%s): the journey would run Generate again", f.GetCode())
			case f.GetRetryable():
				return fmt.Errorf("a retryable failure (%s): the journey would retry the step after a backoff", f.GetCode())
			default:
				return fmt.Errorf("the failure branch ends the journey here (%s)", f.GetCode())
			}
		case *stepexecutorv1.ValidateOtpResponse_Abort:
			return fmt.Errorf("validate aborted the journey: client_error=%s", outcome.Abort.GetClientError().GetCode())
		default:
			return errors.New("validate answered without an outcome")
		}
	}
	return errors.New("the right code was never accepted")
}

func failureLine(f *stepexecutorv1.StepFailure) string {
	line := fmt.Sprintf("code=%s category=%s retryable=%t", f.GetCode(), f.GetCategory(), f.GetRetryable())
	if f.AttemptsRemaining != nil { // optional in the contract: present only for INVALID_CODE
		line += fmt.Sprintf(" attempts_remaining=%d", f.GetAttemptsRemaining())
	}
	if f.RetryAfterSeconds != nil {
		line += fmt.Sprintf(" retry_after_seconds=%d", f.GetRetryAfterSeconds())
	}
	return line
}

func env(name, fallback string) string {
	if value, ok := os.LookupEnv(name); ok && value != "" {
		return value
	}
	return fallback
}
