"""TLS on the gRPC port: the certificate chain and key from files, reloaded when the files change.

grpcio asks a certificate configuration fetcher before each new handshake (`dynamic_ssl_server_credentials`);
the fetcher here compares the files' modification times and re-reads them only when one changed, so a rotated
certificate is served to the next handshake without a restart, while connections already open keep theirs and
nothing in flight is dropped. TLS 1.2 is the floor (grpc's default; it offers 1.3 as well).

With a client CA bundle the server requires and verifies a client certificate (mTLS): a client without one,
or with one from another CA, fails the handshake and never reaches a handler.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the server's TLS material lives (from ServiceSettings)."""

    certificate_chain: Path
    private_key: Path
    client_ca: Path | None = None  # set: mTLS, a verified client certificate is required


class ReloadingCertificates:
    """A certificate configuration fetcher that re-reads the files when their mtime changes.

    grpc calls `__call__` from its own threads (one per handshake that needs it), hence the lock. A rotation
    that leaves the files unreadable or half-written keeps the previous configuration and logs a warning:
    serving the old certificate a little longer beats refusing every handshake.
    """

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._stamp: tuple[float, ...] = ()
        self._current = self._load()  # raises at start-up: bad files are a configuration error there
        self.reloads = 0

    def initial(self) -> grpc.ServerCertificateConfiguration:
        """The configuration the server starts with."""
        return self._current

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration when a file changed since the last look, else None (keep the current)."""
        with self._lock:
            try:
                stamp = self._mtimes()
            except OSError:
                return None
            if stamp == self._stamp:
                return None
            try:
                self._current = self._load()
            except (OSError, ValueError) as exc:
                # The paths, not the contents: a key must never reach a log line.
                log.warning("TLS files changed but could not be loaded (%s); keeping the previous ones", exc)
                self._stamp = stamp
                return None
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self._files.certificate_chain)
            return self._current

    def _mtimes(self) -> tuple[float, ...]:
        paths = [self._files.certificate_chain, self._files.private_key]
        if self._files.client_ca is not None:
            paths.append(self._files.client_ca)
        return tuple(path.stat().st_mtime_ns for path in paths)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        stamp = self._mtimes()
        chain = self._files.certificate_chain.read_bytes()
        key = self._files.private_key.read_bytes()
        if b"-----BEGIN" not in chain or b"PRIVATE KEY-----" not in key:
            raise ValueError("expected a PEM certificate chain and a PEM private key")
        ca = self._files.client_ca.read_bytes() if self._files.client_ca is not None else None
        self._stamp = stamp
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)


def server_credentials(files: TlsFiles) -> tuple[grpc.ServerCredentials, ReloadingCertificates]:
    """Credentials for `add_secure_port` that follow the files, and the fetcher behind them."""
    fetcher = ReloadingCertificates(files)
    credentials = grpc.dynamic_ssl_server_credentials(
        fetcher.initial(),
        # grpc's stub says the fetcher returns a configuration; its docs (and C-core) take None as "unchanged".
        fetcher,  # type: ignore[arg-type]
        require_client_authentication=files.client_ca is not None,
    )
    return credentials, fetcher
