"""Local Cognito (cognito-idp) emulator: moto 5.2.5 plus USER_AUTH with EMAIL_OTP / SMS_OTP.

Public API::

    from cognito_emulator import EmulatorServer, EmulatorSettings

    with EmulatorServer(port=0, settings=EmulatorSettings(code_lifetime_seconds=1)) as emulator:
        emulator.endpoint_url

See the docs, "The local Cognito emulator", for the HTTP contracts (outbox, faults, settings).
"""

from .faults import Fault, FaultOutcome
from .outbox import OutboxMessage
from .runtime import EmulatorRuntime
from .seed import SeedResult, SeedUser, seed_demo, write_connection_files
from .server import EmulatorServer
from .settings import EmulatorSettings, SettingsError

__all__ = [
    "EmulatorRuntime",
    "EmulatorServer",
    "EmulatorSettings",
    "Fault",
    "FaultOutcome",
    "OutboxMessage",
    "SeedResult",
    "SeedUser",
    "SettingsError",
    "seed_demo",
    "write_connection_files",
]
