"""The emulator's WSGI application: cognito-idp only, plus the control endpoints.

Routing is by path, decided once per request without moto's service inference (which scans every
service's URL patterns under a global lock and costs about half of a stock moto request):

- ``/_outbox``, ``/_faults``, ``/_settings``, ``/_health``: the emulator's own HTTP contracts;
- ``/moto-api/...``: moto's API (``POST /moto-api/reset`` also empties our outbox, sessions and faults);
- ``POST /`` with ``X-Amz-Target``: a Cognito API call, fault injection first, then straight to moto's
  ``CognitoIdpResponse``;
- anything else (``/{poolId}/.well-known/jwks.json``, ``openid-configuration``): moto's cognito-idp app.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from moto.cognitoidp.responses import CognitoIdpResponse
from moto.core.request import Request
from moto.moto_server.werkzeug_app import create_backend_app
from werkzeug.http import HTTP_STATUS_CODES

from .faults import ERROR_RESPONSES, FaultSpecError
from .passwordless import install
from .runtime import EmulatorRuntime, bound_runtime
from .settings import SettingsError

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

_JSON = "application/json"
_AMZ_JSON = "application/x-amz-json-1.1"


class ConnectionDropRequested(Exception):  # noqa: N818 - a signal to the HTTP server, not an error
    """Raised by the app when a fault says: close the socket without answering."""


class _ServerRequest(Request):
    # Tells moto a real WSGI server is in front (it then leaves the Date header to the server).
    from_wsgi_server = True


class EmulatorApp:
    """WSGI callable serving one :class:`EmulatorRuntime`."""

    def __init__(self, runtime: EmulatorRuntime) -> None:
        install()
        self.runtime = runtime
        # Built once: moto's server builds these lazily per service behind a lock on every request.
        self._cognito_app = create_backend_app("cognito-idp")
        self._moto_api_app = create_backend_app("moto_api")

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO") or "/"
        method: str = environ.get("REQUEST_METHOD", "GET")
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target and method == "POST":
            return self._api_call(target.rpartition(".")[2], environ, start_response)
        if path.startswith("/_"):
            return self._control(path, method, environ, start_response)
        if path.startswith("/moto-api"):
            with bound_runtime(self.runtime):
                result: Iterable[bytes] = self._moto_api_app(environ, start_response)
            if method == "POST" and path.rstrip("/") == "/moto-api/reset":
                self.runtime.reset()
            return result
        with bound_runtime(self.runtime):
            flask_result: Iterable[bytes] = self._cognito_app(environ, start_response)
            return flask_result

    # ---- Cognito API -----------------------------------------------------------------------------
    def _api_call(self, operation: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        outcome = self.runtime.faults.outcome_for(operation)
        if outcome is not None:
            if outcome.latency_ms:
                time.sleep(outcome.latency_ms / 1000.0)  # the injected latency itself, not a wait
            if outcome.error == "DropConnection":
                raise ConnectionDropRequested(operation)
            if outcome.error is not None:
                status, message = ERROR_RESPONSES[outcome.error]
                return _aws_error(start_response, status, outcome.error, message)
        request = _ServerRequest(environ)
        with bound_runtime(self.runtime):
            status_code, headers, body = CognitoIdpResponse.dispatch(
                request, request.raw_url, dict(request.headers)
            )
        payload = body.encode() if isinstance(body, str) else bytes(body or b"")
        response_headers = [
            (str(name), str(value))
            for name, value in headers.items()
            if name.lower() not in ("status", "content-length", "content-type")
        ]
        # moto labels its JSON errors application/json; Cognito uses its protocol's type for everything.
        response_headers.append(("Content-Type", _AMZ_JSON))
        response_headers.append(("Content-Length", str(len(payload))))
        start_response(_status_line(int(status_code)), response_headers)
        return [payload]

    # ---- control endpoints -------------------------------------------------------------------------
    def _control(
        self, path: str, method: str, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        route = path.rstrip("/") or "/"
        try:
            if route == "/_health" and method == "GET":
                return _json(start_response, 200, {"status": "ok"})
            if route == "/_outbox":
                return self._outbox(method, environ, start_response)
            if route == "/_faults":
                return self._faults(method, environ, start_response)
            if route.startswith("/_faults/") and method == "DELETE":
                removed = self.runtime.faults.remove(route.removeprefix("/_faults/"))
                return _json(start_response, 200 if removed else 404, {"deleted": int(removed)})
            if route == "/_settings":
                return self._settings(method, environ, start_response)
        except (FaultSpecError, SettingsError) as exc:
            return _json(start_response, 400, {"error": str(exc)})
        except ValueError as exc:  # malformed JSON body
            return _json(start_response, 400, {"error": f"invalid JSON body: {exc}"})
        return _json(start_response, 404, {"error": f"no route for {method} {path}"})

    def _outbox(self, method: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        outbox = self.runtime.outbox
        if method == "GET":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            destination = query.get("destination", [None])[0]
            messages = [m.to_json() for m in outbox.messages(destination)]
            return _json(start_response, 200, {"messages": messages})
        if method == "DELETE":
            return _json(start_response, 200, {"deleted": outbox.clear()})
        return _json(start_response, 405, {"error": "use GET or DELETE"})

    def _faults(self, method: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        faults = self.runtime.faults
        if method == "GET":
            return _json(start_response, 200, {"faults": [f.to_json() for f in faults.list()]})
        if method == "POST":
            fault = faults.add(_read_json(environ))
            return _json(start_response, 201, fault.to_json())
        if method == "DELETE":
            return _json(start_response, 200, {"deleted": faults.clear()})
        return _json(start_response, 405, {"error": "use GET, POST or DELETE"})

    def _settings(self, method: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if method == "GET":
            return _json(start_response, 200, self.runtime.settings.to_json())
        if method == "POST":
            changes = _read_json(environ)
            if not isinstance(changes, dict):
                raise SettingsError("the body must be a JSON object of settings to change")
            return _json(start_response, 200, self.runtime.update_settings(changes).to_json())
        return _json(start_response, 405, {"error": "use GET or POST"})


def _read_json(environ: Environ) -> Any:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    return json.loads(raw or b"{}")


def _status_line(status: int) -> str:
    return f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}"


def _json(start_response: StartResponse, status: int, body: Any) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(_status_line(status), [("Content-Type", _JSON), ("Content-Length", str(len(payload)))])
    return [payload]


def _aws_error(start_response: StartResponse, status: int, error_type: str, message: str) -> list[bytes]:
    """An error exactly as Cognito's JSON protocol sends it (what botocore parses)."""
    payload = json.dumps({"__type": error_type, "message": message}).encode()
    start_response(
        _status_line(status),
        [
            ("Content-Type", _AMZ_JSON),
            ("x-amzn-ErrorType", error_type),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            ("Content-Length", str(len(payload))),
        ],
    )
    return [payload]
