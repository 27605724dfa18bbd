"""Load-test harness for the StepExecutor service: `python -m bench` (`make bench`).

ghz drives the real service (started as its own process) over loopback; a canned Cognito responder, the local
emulator and, for the telemetry variant, Jaeger run as their own processes too. Each scenario reports
throughput, latency percentiles, errors and the CPU each process used; targets are judged on ratios measured
side by side in one run (medians of interleaved repetitions). See docs/load-testing.md.

Modules, in the order a run uses them:

- `plan`: what a run does (durations, counts, concurrency) for the full and the quick run.
- `processes`: starting, probing and stopping child processes; CPU and RSS from /proc.
- `cognito_standin`: the canned cognito-idp responder (not an emulator), run as its own process.
- `stack`: the service, stand-in, emulator and Jaeger as started for a scenario.
- `ghz`: ghz command lines and reports.
- `boto_load`: the direct boto3 load loop (its own process), the floor the service is compared with.
- `scenarios`: the scenarios themselves.
- `report`: results as JSON and Markdown, targets judged.
"""
