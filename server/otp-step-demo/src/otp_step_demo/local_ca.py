"""A throw-away certificate authority for local runs and tests: a CA, server and client certificates (PEM).

For `make run TLS=1` and the test suite only; production certificates come from the platform's issuer. Keys are
EC P-256, written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM."""

    certificate: bytes
    key: bytes = field(repr=False)

    def write(self, folder: Path, name: str) -> tuple[Path, Path]:
        """`<name>.crt` and `<name>.key` (0600) in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        crt, key = folder / f"{name}.crt", folder / f"{name}.key"
        crt.write_bytes(self.certificate)
        key.touch(mode=0o600)
        key.write_bytes(self.key)
        return crt, key


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class LocalCa:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, name: str = "otp-step local CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        """The CA certificate (the trust bundle)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        client: bool = False,
        valid_days: float = 7,
        expired: bool = False,
    ) -> Issued:
        """A leaf certificate for a server (default) or a client; `expired`: one that ended yesterday."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=valid_days)
        if expired:
            start, end = now - datetime.timedelta(days=3), now - datetime.timedelta(days=1)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        return Issued(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))

    def server(self, **kwargs: object) -> Issued:
        """A loopback server certificate (localhost, 127.0.0.1, ::1)."""
        return self.issue("localhost", dns=("localhost",), ips=("127.0.0.1", "::1"), **kwargs)  # type: ignore[arg-type]
