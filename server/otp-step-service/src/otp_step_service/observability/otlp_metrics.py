"""OTLP metrics export (`OTEL_METRICS_EXPORTER=otlp`): the Prometheus registry, pushed to a collector.

prometheus_client stays the one source of truth: every instrument is recorded once, in `Metrics`' registry.
`OtlpMetricsBridge` collects that registry on a thread of its own at the export interval — never on the event
loop, never in a request — converts the samples into the OpenTelemetry SDK's `MetricsData` (counters as
cumulative monotonic Sums, histograms as explicit-bucket Histograms, gauges as Gauges) under the service's
Resource, and hands them to the SDK's `OTLPMetricExporter`.

Why a bridge and not the SDK's metrics API: the Python SDK (1.45) has no MetricProducer to plug a foreign
registry into a reader (Go's contrib `bridges/prometheus` does this; the specification has no Python one
yet), and recording every value twice would double the request path's cost.

Telemetry never breaks the host: an export that fails (unreachable collector, a refusal, a bug in the
conversion) is logged, at most once a minute, and the next interval tries again; the exporter's own retries
are bounded by OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT. `shutdown()` exports once more, so a drain loses none of
the last interval's counts.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PromMetric

from otp_step_service.observability import otel_env

if TYPE_CHECKING:  # the SDK is imported only when OTLP metrics are configured
    from opentelemetry.sdk.metrics.export import Metric, MetricExporter, MetricsData
    from opentelemetry.sdk.resources import Resource

log = logging.getLogger(__name__)

# The standard variables are defined, with their defaults, in otel_env (the exporter reads its endpoint,
# protocol, headers and timeout on its own: OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT / HEADERS / TIMEOUT).
DEFAULT_EXPORT_INTERVAL_MS = otel_env.DEFAULT_METRIC_EXPORT_INTERVAL_MS
DEFAULT_EXPORT_TIMEOUT_MS = otel_env.DEFAULT_METRIC_EXPORT_TIMEOUT_MS

SCOPE_NAME = "otp_step_service"
# A failing collector is logged once, then at most this often, so an outage does not flood the log.
FAILURE_LOG_SECONDS = 60.0

# The one metric with an OpenTelemetry semantic convention is exported under its OTel name and attributes:
# a collector's Prometheus exporter turns `rpc.server.call.duration` (unit s) back into
# `rpc_server_call_duration_seconds`, so both paths show the same series.
SEMANTIC_NAMES: Mapping[str, str] = {"rpc_server_call_duration_seconds": "rpc.server.call.duration"}
SEMANTIC_ATTRIBUTES: Mapping[str, str] = {
    "rpc_system": "rpc.system",
    "rpc_service": "rpc.service",
    "rpc_method": "rpc.method",
    "rpc_grpc_status_code": "rpc.grpc.status_code",
}


def otlp_metrics_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment asks for OTLP metrics (OTEL_METRICS_EXPORTER=otlp, SDK not disabled).

    Only the explicit variable turns it on, unlike tracing, which an OTLP endpoint alone enables: a service
    already exporting traces does not start pushing metrics because of an upgrade.
    """
    if otel_env.sdk_disabled(environ):
        return False
    return "otlp" in otel_env.exporters(otel_env.OTEL_METRICS_EXPORTER, environ)


def otlp_metric_exporter(environ: Mapping[str, str] | None = None) -> MetricExporter:
    """The SDK's OTLP metric exporter for the configured protocol (grpc, as for traces, or http/protobuf)."""
    if otel_env.protocol("metrics", environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    return HttpExporter()


def metrics_resource() -> Resource:
    """The traces' resource (service.name, OTEL_RESOURCE_ATTRIBUTES) plus a `service.instance.id`.

    Cumulative series are identified by their resource: two processes (OTP_STEP_PROCESSES > 1, or two
    replicas) exporting under one identity would overwrite each other's totals. An id given in
    OTEL_RESOURCE_ATTRIBUTES is kept; otherwise each process draws one at start.
    """
    from opentelemetry.sdk.resources import Resource

    from otp_step_service.observability.telemetry import tracing_resource

    resource = tracing_resource()
    if "service.instance.id" in resource.attributes:
        return resource
    return resource.merge(Resource({"service.instance.id": str(uuid.uuid4())}))


class OtlpMetricsBridge:
    """Collects a Prometheus registry every interval on its own thread and exports it by OTLP."""

    def __init__(
        self,
        registry: CollectorRegistry,
        exporter: MetricExporter,
        resource: Resource,
        *,
        interval_seconds: float = DEFAULT_EXPORT_INTERVAL_MS / 1000,
        timeout_seconds: float = DEFAULT_EXPORT_TIMEOUT_MS / 1000,
    ) -> None:
        self._registry = registry
        self._exporter = exporter
        self._resource = resource
        self.interval_seconds = interval_seconds
        self._timeout_ms = timeout_seconds * 1000
        # Series without a `_created` sample (custom collectors) start when the bridge did, as Go's does.
        self._start_ns = time.time_ns()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One export at a time: the final flush must not overlap a periodic export still running.
        self._export_lock = threading.Lock()
        self._failing_since: float | None = None
        self._last_failure_log = 0.0
        self.exports = 0
        """Exports the collector accepted (for tests and the log)."""

    @classmethod
    def from_environment(
        cls, registry: CollectorRegistry, environ: Mapping[str, str] | None = None
    ) -> OtlpMetricsBridge:
        """The bridge the OTEL_* variables describe: exporter, resource, interval and timeout."""
        interval_ms = otel_env.positive_int(
            otel_env.OTEL_METRIC_EXPORT_INTERVAL, DEFAULT_EXPORT_INTERVAL_MS, environ
        )
        timeout_ms = otel_env.positive_int(
            otel_env.OTEL_METRIC_EXPORT_TIMEOUT, DEFAULT_EXPORT_TIMEOUT_MS, environ
        )
        return cls(
            registry,
            otlp_metric_exporter(environ),
            metrics_resource(),
            interval_seconds=interval_ms / 1000,
            timeout_seconds=timeout_ms / 1000,
        )

    def start(self) -> None:
        """Start exporting every interval (a daemon thread: it never holds the process open)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="otlp-metrics", daemon=True)
        self._thread.start()
        log.info("metrics: exporting OTLP every %.0f s", self.interval_seconds)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self.export_once()

    def export_once(self) -> bool:
        """Collect the registry now and export it; False (logged, rate-limited) when that failed."""
        with self._export_lock:
            try:
                data = self.collect()
                from opentelemetry.sdk.metrics.export import MetricExportResult

                ok = (
                    self._exporter.export(data, timeout_millis=self._timeout_ms) is MetricExportResult.SUCCESS
                )
                reason = "the collector did not accept the export"
            except Exception as exc:  # telemetry never breaks the service: log, and try next interval
                ok, reason = False, type(exc).__name__
            self._note(ok, reason)
            return ok

    def _note(self, ok: bool, reason: str) -> None:
        now = time.monotonic()
        if ok:
            self.exports += 1
            if self._failing_since is not None:
                log.info("metrics: OTLP export works again after %.0f s", now - self._failing_since)
                self._failing_since = None
            return
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_failure_log >= FAILURE_LOG_SECONDS:
            self._last_failure_log = now
            log.warning("metrics: OTLP export failed (%s); retrying every interval", reason)

    def shutdown(self) -> None:
        """Stop the thread, export the last counts once (a drain loses none) unless the collector is already
        failing, and close the exporter."""
        self._stop.set()
        if self._thread is not None:
            # An export in progress is bounded by the timeout; the flush below waits for it on the lock.
            self._thread.join(timeout=self._timeout_ms / 1000 + 1)
            self._thread = None
        if self._failing_since is None:
            self.export_once()
        else:
            # A collector already failing would hold the drain for the exporter's whole retry budget.
            log.warning("metrics: last OTLP export skipped at shutdown, the collector is failing")
        try:
            self._exporter.shutdown(timeout_millis=self._timeout_ms)
        except Exception as exc:  # shutting down: log and go on
            log.warning("metrics: OTLP exporter did not close cleanly (%s)", type(exc).__name__)

    # -- conversion -------------------------------------------------------------------------------------
    def collect(self) -> MetricsData:
        """The registry's samples now, as the SDK's MetricsData under the service's resource."""
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        now_ns = time.time_ns()
        metrics = [m for family in self._registry.collect() if (m := self._convert(family, now_ns))]
        scope = ScopeMetrics(scope=InstrumentationScope(SCOPE_NAME), metrics=metrics, schema_url="")
        return MetricsData(
            resource_metrics=[ResourceMetrics(resource=self._resource, scope_metrics=[scope], schema_url="")]
        )

    def _convert(self, family: PromMetric, now_ns: int) -> Metric | None:
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Gauge,
            Histogram,
            Metric,
            NumberDataPoint,
            Sum,
        )

        name = SEMANTIC_NAMES.get(family.name, family.name)
        semantic = name != family.name
        # prometheus_client strips the unit into the name (`_seconds`); OTLP carries it apart, in UCUM.
        unit = family.unit or ("s" if family.name.endswith("_seconds") else "")
        data: Any
        if family.type in ("counter", "gauge"):
            suffix = "_total" if family.type == "counter" else ""
            created = _created(family)
            points = [
                NumberDataPoint(
                    attributes=_attributes(s.labels, semantic),
                    start_time_unix_nano=created.get(_key(s.labels), self._start_ns),
                    time_unix_nano=now_ns,
                    value=s.value,
                )
                for s in family.samples
                if s.name == family.name + suffix
            ]
            if family.type == "gauge":
                data = Gauge(data_points=points)
            else:
                data = Sum(
                    data_points=points,
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=True,
                )
        elif family.type == "histogram":
            data = Histogram(
                data_points=self._histogram_points(family, now_ns, semantic),
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
            )
        else:  # summaries, info, state sets: none is recorded here, and OTLP has no exact equivalent
            return None
        if not data.data_points:
            # A labelled instrument nothing has recorded yet: an empty metric is malformed OTLP (a collector
            # rejects it as data type Empty).
            return None
        return Metric(name=name, description=family.documentation, unit=unit, data=data)

    def _histogram_points(self, family: PromMetric, now_ns: int, semantic: bool) -> list[Any]:
        from opentelemetry.sdk.metrics.export import HistogramDataPoint

        created = _created(family)
        buckets: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        sums: dict[tuple[tuple[str, str], ...], float] = {}
        for sample in family.samples:
            if sample.name == family.name + "_bucket":
                labels = {k: v for k, v in sample.labels.items() if k != "le"}
                buckets.setdefault(_key(labels), []).append((float(sample.labels["le"]), sample.value))
            elif sample.name == family.name + "_count":
                counts[_key(sample.labels)] = sample.value
            elif sample.name == family.name + "_sum":
                sums[_key(sample.labels)] = sample.value
        points = []
        for key, cumulative in buckets.items():
            cumulative.sort()
            bounds = [le for le, _ in cumulative if le != float("inf")]
            # Prometheus buckets are cumulative (le), OTLP's count each bucket alone, the last one to +Inf.
            per_bucket, previous = [], 0
            for _, running in cumulative:
                per_bucket.append(int(running) - previous)
                previous = int(running)
            if len(per_bucket) == len(bounds):  # no +Inf bucket: impossible from prometheus_client, kept safe
                per_bucket.append(int(counts.get(key, previous)) - previous)
            points.append(
                HistogramDataPoint(
                    attributes=_attributes(dict(key), semantic),
                    start_time_unix_nano=created.get(key, self._start_ns),
                    time_unix_nano=now_ns,
                    count=int(counts.get(key, previous)),
                    sum=sums.get(key, 0.0),
                    bucket_counts=per_bucket,
                    explicit_bounds=bounds,
                    # Prometheus keeps no min or max: None leaves the optional OTLP fields unset (not 0).
                    min=cast(float, None),
                    max=cast(float, None),
                )
            )
        return points


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _created(family: PromMetric) -> dict[tuple[tuple[str, str], ...], int]:
    # prometheus_client reports each series' creation time (seconds) as `<name>_created`: its true start.
    return {_key(s.labels): int(s.value * 1e9) for s in family.samples if s.name == family.name + "_created"}


def _attributes(labels: Mapping[str, str], semantic: bool) -> dict[str, str | int]:
    if not semantic:
        return dict(labels)
    attributes: dict[str, str | int] = {}
    for label, value in labels.items():
        attribute = SEMANTIC_ATTRIBUTES.get(label, label)
        # The semantic convention has the gRPC status as its number, an int attribute.
        attributes[attribute] = (
            int(value) if attribute == "rpc.grpc.status_code" and value.isdigit() else value
        )
    return attributes
