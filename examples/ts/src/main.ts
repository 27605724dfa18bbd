// An orchestrator running one "Cognito OTP" journey against the step service: Generate, the code the user
// typed (read here from the local emulator's outbox), a wrong code taking the failure branch and looping back
// to the code form, then the right code, with the step variables assigned from the responses. Copy it as the
// starting point of your own journey engine's step calls.
//
//   npm ci && npm run build && node dist/main.js --target 127.0.0.1:50051 \
//       --outbox http://127.0.0.1:4566/_outbox --identifier ada@example.com
//
// Every flag has an environment variable (OTP_STEP_TARGET, OTP_STEP_OUTBOX_URL, OTP_STEP_IDENTIFIER,
// OTP_STEP_CONNECTION, OTP_STEP_TIMEOUT_MS, OTP_STEP_KEEPALIVE_MS). Against a fleet, the target is a name that
// resolves to every instance: dns:///otp-steps.default.svc.cluster.local:50051 (a headless Service). It prints one line per step and exits 1 on anything a real
// journey would not expect here (a gRPC error, an abort, a wrong code accepted, the right one refused).
import { parseArgs } from "node:util";
import { create, type DescEnum, type JsonObject } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import {
  DeliveryMediumSchema,
  ErrorCategorySchema,
  FailureBehavior,
  FailureCode,
  FailureCodeSchema,
  OtpChannel,
  StepConfigurationSchema,
  type StepFailure,
} from "@otpsteps/stepexecutor";
import { JourneyTrace, randomHex } from "./trace.js";
import { Outbox, wrongCode } from "./outbox.js";
import { describe, statusOf, StepExecutorChannel } from "./steps.js";

// The journey's own names: the engine stores step results under these variables.
const JOURNEY_ID = "jit-migration";
const OUTPUT_VARIABLE = "otp_result";
const ERROR_VARIABLE = "otp_error";
// Generate is retried here on a deadline: with the same step_execution_id a retry answers with the first
// result instead of sending a second code (docs: "The contract"). UNAVAILABLE is retried by grpc-js itself,
// from the service config (steps.ts). Nothing else is retried blindly.
const GENERATE_ATTEMPTS = 3;

interface Config {
  target: string;
  outboxUrl: string;
  identifier: string;
  connection: string;
  timeoutMs: number;
  keepaliveMs: number;
}

class JourneyFailed extends Error {}

function config(): Config {
  const { values } = parseArgs({
    options: {
      target: { type: "string", default: process.env.OTP_STEP_TARGET || "127.0.0.1:50051" },
      outbox: { type: "string", default: process.env.OTP_STEP_OUTBOX_URL || "http://127.0.0.1:4566/_outbox" },
      identifier: { type: "string", default: process.env.OTP_STEP_IDENTIFIER || "ada@example.com" },
      connection: { type: "string", default: process.env.OTP_STEP_CONNECTION || "demo" },
      "timeout-ms": { type: "string", default: process.env.OTP_STEP_TIMEOUT_MS || "10000" },
      // The service accepts a ping every 20 s at most (OTP_STEP_MIN_CLIENT_PING_SECONDS): stay above it.
      "keepalive-ms": { type: "string", default: process.env.OTP_STEP_KEEPALIVE_MS || "30000" },
    },
  });
  const timeoutMs = positive(values["timeout-ms"], "--timeout-ms");
  const keepaliveMs = positive(values["keepalive-ms"], "--keepalive-ms");
  return {
    target: values.target,
    outboxUrl: values.outbox,
    identifier: values.identifier,
    connection: values.connection,
    timeoutMs,
    keepaliveMs,
  };
}

function positive(value: string, flag: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number <= 0) {
    throw new JourneyFailed(`${flag} must be a positive integer, got ${value}`);
  }
  return number;
}

async function run(cfg: Config): Promise<void> {
  const steps = new StepExecutorChannel(cfg.target, cfg.keepaliveMs);
  try {
    await journey(cfg, steps);
  } finally {
    steps.close();
  }
}

async function journey(cfg: Config, steps: StepExecutorChannel): Promise<void> {
  const trace = new JourneyTrace();
  const runId = `run-${randomHex(8)}`;
  const vars: Record<string, JsonObject> = {}; // the journey's variables
  console.log(`journey: run=${runId} trace_id=${trace.traceId} identifier=${cfg.identifier}`);

  const step = create(StepConfigurationSchema, {
    connection: cfg.connection,
    userIdentifier: cfg.identifier,
    otpChannel: OtpChannel.EMAIL,
    scopes: ["openid", "profile", "email"],
    outputVariable: OUTPUT_VARIABLE,
    errorOutputVariable: ERROR_VARIABLE,
    failureBehavior: FailureBehavior.FAILURE_BRANCH,
  });

  // --- Step "send-code": Cognito OTP Generate.
  const outbox = new Outbox(cfg.outboxUrl, cfg.identifier, cfg.timeoutMs);
  const seen = (await outbox.messages()).length;
  const generate = {
    journey: {
      journeyId: JOURNEY_ID,
      journeyRunId: runId,
      stepId: "send-code",
      stepExecutionId: `${runId}/send-code/1`, // one execution of the step, reused by its retries
    },
    step,
  };
  let sent;
  for (let attempt = 1; ; attempt++) {
    try {
      sent = await steps.generateOtp(generate, trace.call(cfg.timeoutMs));
      break;
    } catch (error) {
      if (statusOf(error) === status.DEADLINE_EXCEEDED && attempt < GENERATE_ATTEMPTS) {
        console.log(`generate: deadline exceeded, retrying with the same step_execution_id (attempt ${attempt + 1})`);
        continue;
      }
      throw new JourneyFailed(`generate could not run: ${describe(error)}`);
    }
  }
  Object.assign(vars, sent.variables);
  switch (sent.outcome.case) {
    case "success": {
      const s = sent.outcome.value;
      console.log(
        `generate: success medium=${protoName(DeliveryMediumSchema, s.deliveryMedium)} ` +
          `destination=${s.maskedDestination} max_attempts=${s.maxAttempts}`,
      );
      break;
    }
    case "failure":
      // The failure branch: a real journey would show "could not send a code" or retry later.
      throw new JourneyFailed(`generate took the failure branch: ${failureLine(sent.outcome.value)}`);
    case "abort":
      throw new JourneyFailed(`generate aborted the journey: client_error=${sent.outcome.value.clientError?.code}`);
    default:
      throw new JourneyFailed("generate answered without an outcome");
  }

  // --- Form step: the user types the code. Here: from the emulator's outbox, with a wrong one first.
  const code = await outbox.codeAfter(seen);
  const typed = [wrongCode(code), code];

  // --- Step "check-code": Cognito OTP Validate, looping back to the form on the failure branch.
  for (const [i, otpCode] of typed.entries()) {
    const validate = {
      journey: {
        journeyId: JOURNEY_ID,
        journeyRunId: runId, // the run Generate ran in: the challenge is kept under it
        stepId: "check-code",
        stepExecutionId: `${runId}/check-code/${i + 1}`,
      },
      step,
      otpCode,
    };
    let checked;
    try {
      checked = await steps.validateOtp(validate, trace.call(cfg.timeoutMs));
    } catch (error) {
      // Not retried, neither here nor by grpc-js (the service config gives ValidateOtp no retryPolicy): a
      // Validate that timed out or lost its instance may already have been judged and spent an attempt.
      throw new JourneyFailed(`validate could not run: ${describe(error)}`);
    }
    Object.assign(vars, checked.variables);
    switch (checked.outcome.case) {
      case "success": {
        if (otpCode !== code) throw new JourneyFailed("validate accepted a wrong code");
        const s = checked.outcome.value;
        console.log(
          `validate: success sub=${s.sub} username=${s.username} email=${String(s.claims?.email)} ` +
            `verified=${protoName(DeliveryMediumSchema, s.verifiedMedium)}`,
        );
        if (vars[OUTPUT_VARIABLE]?.sub !== s.sub) {
          throw new JourneyFailed(`variable ${OUTPUT_VARIABLE} does not carry the sub`);
        }
        console.log(`variable ${OUTPUT_VARIABLE}: ${JSON.stringify(vars[OUTPUT_VARIABLE])}`);
        console.log("journey: completed");
        return;
      }
      case "failure": {
        const f = checked.outcome.value;
        console.log(`validate: failure ${failureLine(f)}`);
        console.log(`variable ${ERROR_VARIABLE}: ${JSON.stringify(vars[ERROR_VARIABLE])}`);
        switch (f.code) {
          case FailureCode.INVALID_CODE:
            if ((f.attemptsRemaining ?? 0) > 0) {
              console.log(`journey: failure branch -> back to the code form (${f.attemptsRemaining} attempts left)`);
              continue;
            }
            throw new JourneyFailed("no attempts left");
          case FailureCode.ATTEMPTS_EXHAUSTED:
          case FailureCode.CHALLENGE_EXPIRED:
          case FailureCode.CHALLENGE_NOT_FOUND:
            throw new JourneyFailed(
              `the challenge is gone (${protoName(FailureCodeSchema, f.code)}): the journey would run Generate again`,
            );
          default:
            if (f.retryable) {
              throw new JourneyFailed(
                `a retryable failure (${protoName(FailureCodeSchema, f.code)}): the journey would retry after a backoff`,
              );
            }
            throw new JourneyFailed(`the failure branch ends the journey here (${protoName(FailureCodeSchema, f.code)})`);
        }
      }
      case "abort":
        throw new JourneyFailed(`validate aborted the journey: client_error=${checked.outcome.value.clientError?.code}`);
      default:
        throw new JourneyFailed("validate answered without an outcome");
    }
  }
  throw new JourneyFailed("the right code was never accepted");
}

function failureLine(f: StepFailure): string {
  let line =
    `code=${protoName(FailureCodeSchema, f.code)} category=${protoName(ErrorCategorySchema, f.category)} ` +
    `retryable=${f.retryable}`;
  // Optional in the contract: present only for INVALID_CODE / RESEND_TOO_SOON.
  if (f.attemptsRemaining !== undefined) line += ` attempts_remaining=${f.attemptsRemaining}`;
  if (f.retryAfterSeconds !== undefined) line += ` retry_after_seconds=${f.retryAfterSeconds}`;
  return line;
}

/** The enum value's name as the .proto spells it (FAILURE_CODE_INVALID_CODE), as the Go example prints it. */
function protoName(schema: DescEnum, value: number): string {
  return schema.value[value]?.name ?? String(value);
}

try {
  await run(config());
} catch (error) {
  console.error(`journey: FAILED: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
}
