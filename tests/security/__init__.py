"""TLS, authentication, callers and tenancy.

Named to sort after tests/emulator: its fixtures reset moto's process-global state, which would delete the pool of
the session emulator (tests/conftest.py) if a folder before it had already created that emulator.
"""
