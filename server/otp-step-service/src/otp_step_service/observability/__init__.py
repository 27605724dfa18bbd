"""Observability: Prometheus metrics (and their OTLP bridge), traces with journey event data, step logs."""
