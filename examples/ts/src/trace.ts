import { randomBytes } from "node:crypto";
import type { CallOptions } from "@connectrpc/connect";

/**
 * Makes the whole journey one W3C trace: every step call carries a `traceparent` header with the journey's
 * trace id and a fresh parent id, the way a journey span's children would. The service's OpenTelemetry
 * instrumentation continues the trace from that header. With OpenTelemetry in your engine, propagate its
 * context instead (propagation.inject into the call's headers) and this disappears.
 */
export class JourneyTrace {
  readonly traceId = randomHex(16);

  /** The options of one step call: its deadline and its traceparent. */
  callOptions(timeoutMs: number): CallOptions {
    return {
      timeoutMs,
      headers: { traceparent: `00-${this.traceId}-${randomHex(8)}-01` }, // version 00, sampled
    };
  }
}

export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}
