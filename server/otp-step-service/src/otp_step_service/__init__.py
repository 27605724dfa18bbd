"""The Cognito OTP step service: the Generate and Validate journey steps, executed over gRPC.

How a request travels, top to bottom:

- ``transport/`` — gRPC ⇄ domain: messages, status codes, authentication, admission, the server itself.
- ``steps/`` — the domain: Generate and Validate, their outcomes, and the ports they need. It imports
  neither grpc nor botocore.
- ``adapters/`` — what implements the ports: Cognito through aiobotocore, the challenge stores (memory,
  Redis), session sealing, token verification.

Beside them, ``config/`` (settings, the connections file, reload), ``observability/`` (metrics, traces,
logs) and ``app/``, the composition root: the one place that knows every concrete part and wires them.
"""
