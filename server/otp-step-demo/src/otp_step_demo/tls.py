"""`make run TLS=1`: a throw-away local CA, the service's certificate and one client's, and a caller for it.

Everything is written under the run folder (var/run/tls/) and made again each run; nothing here is for
production, where certificates come from the platform's issuer (the docs, "TLS and authentication").
"""

from __future__ import annotations

from pathlib import Path

from otp_step_demo.local_ca import LocalCa

DEMO_CALLER = "spiffe://otp-step.local/demo-client"


def prepare(run_dir: Path, connections: Path) -> dict[str, str]:
    """Write the CA, server and client files, add the demo caller to `connections`; the service's settings."""
    folder = run_dir / "tls"
    ca = LocalCa("otp-step make-run CA")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.crt").write_bytes(ca.pem)
    cert, key = ca.server().write(folder, "server")
    ca.issue("demo-client", uris=(DEMO_CALLER,), client=True).write(folder, "client")
    with connections.open("a") as file:
        file.write(
            f'\n[callers.demo-client]\ncertificate_identities = ["{DEMO_CALLER}"]\nconnections = ["*"]\n'
        )
    return {
        "OTP_STEP_TLS_CERT": str(cert),
        "OTP_STEP_TLS_KEY": str(key),
        "OTP_STEP_TLS_CLIENT_CA": str(folder / "ca.crt"),
    }


def client_flags(run_dir: Path) -> str:
    """The otp-step (and ghz) flags of the demo client, with a leading space."""
    tls = run_dir / "tls"
    return f" --cacert {tls}/ca.crt --cert {tls}/client.crt --key {tls}/client.key"


def banner(listen: str, run_dir: Path) -> str:
    """How to call the mTLS service with otp-step, grpcurl and ghz."""
    tls = run_dir / "tls"
    files = client_flags(run_dir).strip()
    grpcurl = f"-cacert {tls}/ca.crt -cert {tls}/client.crt -key {tls}/client.key"
    return f"""
 TLS=1: mTLS with a throw-away CA under {tls} (caller {DEMO_CALLER}, every connection).
   grpcurl {grpcurl} {listen} list
   .bin/ghz {files} --call stepexecutor.v1.StepExecutor.CheckConnection -d '{{"connection":"demo"}}' \\
       -n 200 -c 10 {listen}
 Without the certificate flags a call fails (UNAVAILABLE): the port requires a client certificate.
"""
