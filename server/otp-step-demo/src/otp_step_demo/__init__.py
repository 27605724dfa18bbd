"""The demo: the service beside a seeded local Cognito emulator (`make run`), and a local CA for its mTLS mode."""
