import { readFileSync } from "node:fs";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethodUnary,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { Client, credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { StepExecutor } from "@otpsteps/stepexecutor";

/**
 * The gRPC service config the Python client ships (service_config.json, kept identical to every other copy by
 * the repository's tests): round_robin over every address the target resolves to (a dns:/// name of a
 * headless Service), waitForReady, and retries on UNAVAILABLE for the methods that are safe to repeat:
 * GenerateOtp (idempotent per journey run and step execution: a repeat answers with the code already sent,
 * never sends a second) and CheckConnection (it only reads). ValidateOtp is not retried: a Validate whose
 * instance went away after Cognito judged the code may have spent an attempt, and a blind repeat would spend
 * another; the journey decides.
 */
const SERVICE_CONFIG = readFileSync(new URL("../service_config.json", import.meta.url), "utf8");

/** One step call's deadline and the W3C traceparent that makes the journey one trace. */
export interface StepCall {
  timeoutMs: number;
  traceparent: string;
}

/**
 * The StepExecutor's unary methods over one grpc-js channel, with the messages protoc-gen-es generated
 * (client/ts). grpc-js rather than Connect's gRPC transport: Connect (2.x) reaches one address per base URL
 * and has no service config, so no round_robin, no waitForReady and no retries by the library; grpc-js
 * implements the service config (gRFC A2, A6) and keepalive (A8) like grpc-go, grpc-java and the Python client.
 */
export class StepExecutorChannel {
  private readonly client: Client;

  constructor(target: string, keepaliveMs: number) {
    // Plaintext on loopback for the local demo; use credentials.createSsl() for a deployed service.
    this.client = new Client(target, credentials.createInsecure(), {
      "grpc.service_config": SERVICE_CONFIG,
      "grpc.enable_retries": 1,
      // Pings on an idle connection too, so a half-open connection to a dead instance is noticed before the
      // next step needs it; the service accepts one every 20 s (more is answered with GOAWAY too_many_pings).
      "grpc.keepalive_time_ms": keepaliveMs,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.keepalive_permit_without_calls": 1,
    });
  }

  readonly generateOtp = this.unary(StepExecutor.method.generateOtp);
  readonly validateOtp = this.unary(StepExecutor.method.validateOtp);

  close(): void {
    this.client.close();
  }

  private unary<I extends DescMessage, O extends DescMessage>(method: DescMethodUnary<I, O>) {
    const path = `/${method.parent.typeName}/${method.name}`;
    return (request: MessageInitShape<I>, call: StepCall): Promise<MessageShape<O>> => {
      // grpc-js 1.14 reads waitForReady in the service config but does not apply it to calls (it only checks
      // the field's type): the call's own option carries it.
      const metadata = new Metadata({ waitForReady: true });
      metadata.set("traceparent", call.traceparent);
      return new Promise((resolve, reject) => {
        this.client.makeUnaryRequest(
          path,
          (message: MessageShape<I>) => Buffer.from(toBinary(method.input, message)),
          (bytes: Buffer) => fromBinary(method.output, bytes),
          create(method.input, request),
          metadata,
          { deadline: Date.now() + call.timeoutMs },
          (error: ServiceError | null, response?: MessageShape<O>) =>
            error || response === undefined ? reject(error ?? new Error("no response")) : resolve(response),
        );
      });
    };
  }
}

/** The gRPC status code of a failed call, if it is one. */
export function statusOf(error: unknown): status | undefined {
  const code = (error as Partial<ServiceError> | null)?.code;
  return typeof code === "number" ? code : undefined;
}

/** A failed call as "DEADLINE_EXCEEDED: ...", the code first. */
export function describe(error: unknown): string {
  const code = statusOf(error);
  if (code === undefined) return String(error);
  return `${status[code]}: ${(error as ServiceError).details}`;
}
