"""``EmulatorServer``: the emulator on a real socket, in a daemon thread (tests) or the foreground (CLI)."""

from __future__ import annotations

import threading
from types import TracebackType

from .app import EmulatorApp
from .http_server import WSGIServer
from .runtime import EmulatorRuntime
from .settings import DEFAULT_PORT, EmulatorSettings


class EmulatorServer:
    """A cognito-idp emulator listening on ``host:port`` (``port=0`` picks a free one).

    moto keeps pools and users process-wide, so two servers in one process share them; each server has
    its own settings, outbox, USER_AUTH sessions and faults.

    >>> with EmulatorServer(port=0) as emulator:
    ...     emulator.endpoint_url  # doctest: +SKIP
    'http://127.0.0.1:54321'
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        settings: EmulatorSettings | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        self._host = host
        self._requested_port = port
        self.runtime = EmulatorRuntime(settings or EmulatorSettings())
        self._verbose = verbose
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> EmulatorServer:
        """Bind and serve in a daemon thread; returns once the socket accepts connections."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._server = self._bind()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"cognito-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Bind and serve in the calling thread until interrupted (the CLI)."""
        self._server = self._bind()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()
            self._server = None

    def stop(self) -> None:
        """Stop accepting, end open connections and wait for the serving thread."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.close_all_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- where it is ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """The host the server binds to."""
        return self._host

    @property
    def endpoint_url(self) -> str:
        """Base URL for boto3's ``endpoint_url``, e.g. ``http://127.0.0.1:4566``."""
        return f"http://{self._host}:{self.port}"

    @property
    def settings(self) -> EmulatorSettings:
        """The current settings of this server."""
        return self.runtime.settings

    def _bind(self) -> WSGIServer:
        return WSGIServer(self._host, self._requested_port, EmulatorApp(self.runtime), verbose=self._verbose)
