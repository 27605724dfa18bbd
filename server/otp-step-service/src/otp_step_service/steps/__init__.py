"""The domain: the Generate and Validate steps, their outcomes and failure codes, and the ports they use.

Imports neither grpc nor botocore (tests/test_architecture.py holds it to that).
"""
