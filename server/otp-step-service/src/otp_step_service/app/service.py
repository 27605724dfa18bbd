"""Assembling the service from its settings: connections, challenge store, runner, server, self-test.

`Service.build(settings, store=..., clock=..., connections=...)` is the one seam: the entry point passes
nothing and gets the real adapters; tests pass fakes (a fake Cognito, a fake clock) or a recording store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from otp_step_service.app.connection_checks import (
    check_connections,
    close_connections,
)
from otp_step_service.app.connections import build_connections
from otp_step_service.app.execution import StepRunner
from otp_step_service.app.reload import ConfigurationWatch, ConnectionsReloader
from otp_step_service.app.stores import challenge_store, store_secrets
from otp_step_service.app.stores import step_rate as shared_step_rate
from otp_step_service.app.tokens import bearer_tokens
from otp_step_service.config.connections import load_configuration
from otp_step_service.config.settings import ServiceSettings
from otp_step_service.observability.metered_store import MeteredChallengeStore
from otp_step_service.observability.metrics import Metrics
from otp_step_service.observability.otlp_metrics import OtlpMetricsBridge, otlp_metrics_configured
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock
from otp_step_service.steps.decoys import DecoyMasks
from otp_step_service.steps.ports import ChallengeStore, Connection
from otp_step_service.steps.step_rate import StepRate
from otp_step_service.transport.call_metrics import CallDuration
from otp_step_service.transport.readiness import ConnectionReadiness
from otp_step_service.transport.security import PortSecurity
from otp_step_service.transport.server import SERVICE_NAME, STEP_METHODS, ServerLimits, StepExecutorServer

log = logging.getLogger(__name__)


def decoy_masks(keys_file: Path | None) -> DecoyMasks:
    """The decoys' mask key: derived from the challenge keys (so every instance sharing the store, and so
    the keys, shows one unknown identifier the same mask), else this process's own."""
    if keys_file is None:
        return DecoyMasks.ephemeral()
    from otp_step_service.adapters.sealing import SessionSealer

    return DecoyMasks(SessionSealer.from_file(keys_file).derived_key("decoy masks"))


@dataclass
class Service:
    """A built service: connections, store, runner and server, ready to start on the running event loop."""

    settings: ServiceSettings
    runner: StepRunner
    server: StepExecutorServer
    metrics: Metrics | None = None
    reloader: ConnectionsReloader | None = None
    readiness: ConnectionReadiness | None = None
    otlp_metrics: OtlpMetricsBridge | None = None
    watch: ConfigurationWatch | None = None

    @classmethod
    def build(
        cls,
        settings: ServiceSettings,
        *,
        tracing: bool = False,
        store: ChallengeStore | None = None,
        clock: Clock = SYSTEM_CLOCK,
        connections: Mapping[str, Connection] | None = None,
        metrics: Metrics | None = None,
        step_rate: StepRate | None = None,
    ) -> Service:
        """Validate the configuration and assemble the parts (configuration errors raise here, before
        serving). Pass `store`, `clock` or `connections` to replace the real ones (tests), `metrics` to
        record into a registry of your own (otherwise they are recorded only with OTP_STEP_METRICS_LISTEN or
        OTEL_METRICS_EXPORTER=otlp, which exports that registry, whoever made it, by OTLP), `step_rate` to
        count callers' steps per second elsewhere than beside the store."""
        otlp = otlp_metrics_configured()
        if metrics is None and (settings.metrics_listen or otlp):
            metrics = Metrics()
        # The connections file, read once here: the connections, the callers and the watched files.
        configuration = None
        if connections is None:
            configuration = load_configuration(settings.connections_path)
            connections = build_connections(
                configuration, http_pool_size=settings.max_concurrent_steps, metrics=metrics
            )
        if store is None:
            store = challenge_store(
                settings.challenge_store,
                settings.challenge_keys_file,
                clock,
                settings.max_concurrent_steps,
                secrets=store_secrets(settings),
                min_replicas=settings.store_min_replicas,
            )
        if metrics is not None:
            store = MeteredChallengeStore(store, metrics)
        runner = StepRunner(connections, store, clock, metrics, decoy_masks(settings.challenge_keys_file))
        limits = ServerLimits(
            max_concurrent_steps=settings.max_concurrent_steps,
            max_steps_per_caller=settings.max_steps_per_caller,
            max_streams_per_connection=settings.max_streams_per_connection,
            max_open_rpcs=settings.max_open_rpcs,
            max_open_rpcs_per_caller=settings.max_open_rpcs_per_caller,
            idle_stream_seconds=settings.idle_stream_seconds,
            max_message_bytes=settings.max_message_bytes,
            reuse_port=settings.processes > 1,
            max_connection_age_seconds=settings.max_connection_age_seconds,
            max_connection_age_grace_seconds=settings.max_connection_age_grace_seconds,
            min_client_ping_seconds=settings.min_client_ping_seconds,
        )
        security = PortSecurity.from_settings(
            settings,
            STEP_METHODS,
            rate=lambda: step_rate or shared_step_rate(settings, clock),
            clock=clock,
            callers=configuration.callers if configuration is not None else None,
            tokens=bearer_tokens(settings, clock),
        )
        server = StepExecutorServer(
            runner,
            settings.listen,
            limits,
            tracing=tracing,
            security=security,
            health_listen=settings.health_listen,
        )
        if metrics is not None:
            server.outer_interceptors.append(CallDuration(metrics.rpc_duration))
            refusals = [server.admission.refusals, runner.refusals]
            if security.authentication is not None:
                refusals.append(security.authentication.refusals)
            metrics.watch_admission(lambda: server.admission.steps_in_flight, *refusals)
            metrics.watch_circuits(lambda: runner.connections)
            if tracing:
                metrics.watch_span_export()
        service = cls(settings, runner, server, metrics)
        if metrics is not None and otlp:
            service.otlp_metrics = OtlpMetricsBridge.from_environment(metrics.registry)
        service.readiness = ConnectionReadiness(server.health, ("", SERVICE_NAME))
        service.readiness.watch(runner.connections)
        service.reloader = ConnectionsReloader(
            runner,
            settings.connections_path,
            http_pool_size=settings.max_concurrent_steps,
            drain_seconds=settings.grace_seconds,
            self_test=settings.self_test,
            metrics=metrics,
            callers=security.authentication
            if security.authentication is not None and security.authentication.authenticates
            else None,
        )
        if configuration is not None:
            service.reloader.remember(configuration)
        return service

    async def prepare(self, self_test: bool = True) -> None:
        """Self-test the connections (per OTP_STEP_SELF_TEST) and warm their clients and keys."""
        if self_test:
            await check_connections(self.runner.connections, self.settings.self_test)
        for name, connection in self.runner.connections.items():
            try:
                await connection.gateway.warm_up()
                await connection.verifier.warm_up()
            except Exception as exc:  # warming is an optimisation; the first step will retry it
                log.warning("connection %s: could not warm up (%s)", name, type(exc).__name__)

    async def start(self) -> None:
        """Bind and serve (and the scrape endpoint, with OTP_STEP_METRICS_LISTEN; the OTLP export, with
        OTEL_METRICS_EXPORTER=otlp)."""
        await self.server.start()
        if self.readiness is not None:
            await self.readiness.publish()
        if self.metrics is not None and self.settings.metrics_listen:
            try:
                port = self.metrics.serve(self.settings.metrics_listen)
            except OSError as exc:
                await self.server.stop(0)
                raise OSError(
                    f"cannot listen on {self.settings.metrics_listen} for metrics: {exc.strerror} "
                    "(OTP_STEP_METRICS_LISTEN)"
                ) from None
            log.info("metrics: http://%s/metrics (port %d)", self.settings.metrics_listen, port)
            if not self.settings.metrics_on_loopback:
                log.warning(
                    "METRICS BEYOND LOOPBACK on %s (OTP_STEP_METRICS_ALLOW_REMOTE): plaintext and unauthenticated",
                    self.settings.metrics_listen,
                )
        if self.otlp_metrics is not None:
            self.otlp_metrics.start()
        if self.reloader is not None and self.settings.reload_poll_seconds > 0:
            self.watch = ConfigurationWatch(
                self.settings.connections_path, self.settings.reload_poll_seconds, self.reload
            )
            self.watch.start()

    async def reload(self) -> bool:
        """Re-read the connections file and secrets (SIGHUP); False, the old configuration kept, if invalid."""
        if self.reloader is None or not await self.reloader.reload():
            return False
        if self.readiness is not None:
            await self.readiness.publish(self.readiness.watch(self.runner.connections))
        return True

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server.port

    async def stop(self, grace: float, notice: float = 0.0) -> None:
        """NOT_SERVING for `notice` seconds, drain in-flight steps within `grace` seconds, then close every
        connection and the store."""
        if self.watch is not None:
            await self.watch.aclose()  # no reload may start while the service drains
        try:
            await self.server.stop(grace, notice)
        finally:
            if self.metrics is not None:
                self.metrics.close()
            if self.otlp_metrics is not None:
                # After the drain, so the last steps' counts go out; off the loop, as every export is.
                await asyncio.to_thread(self.otlp_metrics.shutdown)
            await close_connections(self.runner.connections)
            if self.reloader is not None:
                await self.reloader.aclose()
            try:
                await self.runner.store.aclose()
            except Exception as exc:  # shutting down: log and go on
                log.warning("challenge store: could not close cleanly (%s)", type(exc).__name__)
