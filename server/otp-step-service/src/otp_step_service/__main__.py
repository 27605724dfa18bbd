"""`python -m otp_step_service`: the command line lives in the composition root (app/cli.py)."""

from otp_step_service.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
