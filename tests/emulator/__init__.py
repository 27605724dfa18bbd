"""Tests of the local Cognito emulator (cognito_emulator)."""
