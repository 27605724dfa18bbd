"""The gRPC service config and channel options the client ships, so a caller rides out a rolling restart, a
dead instance and a scale-out of a fleet behind one DNS name (a headless Service: `dns:///otp-steps:50051`).

- `round_robin`: calls spread over every address the name resolves to (gRPC's default, `pick_first`, would
  send everything down one connection to one instance).
- `waitForReady`: a step called while no instance is reachable (all restarting) waits, within its deadline,
  instead of failing at once. Health checks keep gRPC's defaults: a probe reports what it finds, at once.
- `retryPolicy` on `UNAVAILABLE` for the methods that are safe to repeat: GenerateOtp (idempotent per journey
  run and step execution: a repeat replays the code already sent, never sends a second), CheckConnection (reads
  only). Not ValidateOtp: a Validate that reached Cognito before its instance died may have
  spent the code, and a blind repeat would spend an attempt; its caller decides (the journey's retry).
  gRPC retries only calls that got no response headers, at most `maxAttempts` times in all.
- keepalive pings every 30 s (with no call open too), which the service's enforcement accepts (it allows one
  every 20 s), so a half-open connection to a dead instance is noticed within 40 s rather than at the next call.
"""

from __future__ import annotations

import json

_RETRY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

SERVICE_CONFIG: dict[str, object] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [
                {"service": "stepexecutor.v1.StepExecutor", "method": "GenerateOtp"},
                {"service": "stepexecutor.v1.StepExecutor", "method": "CheckConnection"},
            ],
            "waitForReady": True,
            "retryPolicy": _RETRY,
        },
        {
            "name": [{"service": "stepexecutor.v1.StepExecutor", "method": "ValidateOtp"}],
            "waitForReady": True,
        },
    ],
    # Retries stop when more than half the recent calls failed: a struggling fleet is not flooded.
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}

KEEPALIVE_MS = 30_000

CHANNEL_OPTIONS: tuple[tuple[str, object], ...] = (
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
