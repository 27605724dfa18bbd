import { randomBytes } from "node:crypto";
import type { StepCall } from "./steps.js";

/**
 * Makes the whole journey one W3C trace: every step call carries a `traceparent` header with the journey's
 * trace id and a fresh parent id, the way a journey span's children would. The service's OpenTelemetry
 * instrumentation continues the trace from that header. With OpenTelemetry in your engine, propagate its
 * context instead (propagation.inject into the call's metadata) and this disappears.
 */
export class JourneyTrace {
  readonly traceId = randomHex(16);

  /** One step call: its deadline and its traceparent. */
  call(timeoutMs: number): StepCall {
    return { timeoutMs, traceparent: `00-${this.traceId}-${randomHex(8)}-01` }; // version 00, sampled
  }
}

export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}
