"""Load-test harness for the StepExecutor service: `python -m bench` (`make bench`).

ghz drives the real service (started as its own process) over loopback; a canned Cognito responder, the local
emulator and, for the telemetry variant, Jaeger run as their own processes too. Each scenario reports
throughput, latency percentiles, errors and the CPU each process used; targets are judged on ratios measured
side by side in one run (medians of interleaved repetitions). See the docs, "Load testing".

Modules:

- `scenarios`: the plan (full / quick) and the scenarios; `__main__` runs them, `report` judges the targets
  and writes results.json / summary.md.
- `stack`: the service, stand-in, emulator and Jaeger (`jaeger.yaml`) as started for a scenario.
- `counted_service`: the service's own entry point plus a counter of step outcomes.
- `cognito_standin`: the canned cognito-idp responder (not an emulator), run as its own process.
- `ghz`: ghz command lines and reports; descriptors from the server's reflection (`python -m bench.ghz protoset`).
- `boto_load`: the direct boto3 load loop (its own process), the floor the service is compared with.
- `processes`: starting, probing and stopping child processes; CPU and RSS from /proc.
"""
