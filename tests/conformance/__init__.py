"""The conformance suite, run end to end, and the service under the inferred rules it checks."""
