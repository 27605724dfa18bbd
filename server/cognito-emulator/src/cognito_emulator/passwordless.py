"""USER_AUTH (choice-based sign-in) with EMAIL_OTP / SMS_OTP, on top of moto's cognito-idp backend.

moto 5.2.5 rejects ``AuthFlow=USER_AUTH``. :class:`PasswordlessBackend` subclasses moto's backend,
answers USER_AUTH and its challenges (``SELECT_CHALLENGE``, ``EMAIL_OTP``, ``SMS_OTP``, ``PASSWORD``) and
hands every other flow to moto unchanged. :func:`install` swaps it into moto's ``cognitoidp_backends``.

Rules follow the AWS API reference and developer guide (docs, "USER_AUTH as emulated"); the ones AWS does
not document are marked ``[inferred]`` (docs, "Inferred behaviours") and driven by :class:`~cognito_emulator.settings.EmulatorSettings` where a knob makes sense.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from typing import Any

from moto.cognitoidp import urls as moto_cognitoidp_urls
from moto.cognitoidp.exceptions import (
    CodeMismatchException,
    InvalidParameterException,
    NotAuthorizedError,
    ResourceNotFoundError,
    UserNotConfirmedException,
    UserNotFoundError,
)
from moto.cognitoidp.models import (
    CognitoIdpBackend,
    CognitoIdpUser,
    CognitoIdpUserPool,
    CognitoIdpUserPoolClient,
    UserStatus,
    cognitoidp_backends,
)

from .delivery import mask, mask_email, mask_phone, render_message
from .outbox import DeliveryMedium
from .runtime import EmulatorRuntime, current_runtime
from .sessions import AnswerVerdict, AuthSession
from .user_pools import (
    CHALLENGE_ORDER,
    CHANNELS,
    CODE_DIGITS,
    DEFAULT_AUTH_SESSION_VALIDITY_MINUTES,
    OWN_CHALLENGES,
    PASSWORD,
    SELECT_CHALLENGE,
    USER_AUTH,
    IndexedUserPool,
    allowed_first_factors,
    available_challenges,
    find_user,
)

MSG_INVALID_SESSION = "Invalid session for the user."
MSG_EXPIRED_SESSION = "Invalid session for the user, session is expired."
MSG_CODE_MISMATCH = "Invalid code received for user"
MSG_USER_DISABLED = "User is disabled."


def generate_code() -> str:
    """A fresh 8-digit sign-in code from the OS CSPRNG."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def secret_hash(*, username: str, client_id: str, client_secret: str) -> str:
    """[doc] ``base64(HMAC_SHA256(key=client_secret, msg=USERNAME + client_id))``.

    Keyword-only, in the order of the message, exactly as the service's `adapters.cognito.secret_hash`.
    """
    digest = hmac.new(client_secret.encode(), (username + client_id).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class PasswordlessBackend(CognitoIdpBackend):
    """moto's cognito-idp backend plus USER_AUTH. Other flows are moto's own."""

    @property
    def _url_module(self) -> Any:
        # moto derives the urls module from the backend class's module; ours lives elsewhere.
        return moto_cognitoidp_urls

    # ---- pools -------------------------------------------------------------------------------------
    def create_user_pool(self, name: str, extended_config: dict[str, Any]) -> CognitoIdpUserPool:
        """CreateUserPool, with our pool class."""
        user_pool = IndexedUserPool(self.account_id, self.region_name, name, extended_config)
        self.user_pools[user_pool.id] = user_pool
        return user_pool

    def get_user(self, access_token: str) -> CognitoIdpUser:
        """GetUser: a live access token of an enabled user is enough.

        [inferred] moto also demands status CONFIRMED, so a user created by AdminCreateUser (status
        FORCE_CHANGE_PASSWORD, typical of migrated users) who signs in with a code could not read their own
        attributes. Cognito authorizes GetUser by the token; a disabled user's tokens stop working.
        """
        for user_pool in self.user_pools.values():
            if access_token in user_pool.access_tokens:
                _, username = user_pool.access_tokens[access_token]
                user: CognitoIdpUser = self.admin_get_user(user_pool.id, username)
                if not user.enabled:
                    raise NotAuthorizedError("User is disabled.")
                return user
        raise NotAuthorizedError("Invalid Access Token")

    # ---- the four auth operations --------------------------------------------------------------------
    def initiate_auth(
        self, client_id: str, auth_flow: str, auth_parameters: dict[str, str]
    ) -> dict[str, Any]:
        """InitiateAuth: USER_AUTH here, other flows in moto."""
        if auth_flow != USER_AUTH:
            result: dict[str, Any] = super().initiate_auth(client_id, auth_flow, auth_parameters)
            return result
        pool, client = self._pool_and_client(client_id)
        return self._start(pool, client, auth_parameters or {})

    def admin_initiate_auth(
        self,
        user_pool_id: str,
        client_id: str,
        auth_flow: str,
        auth_parameters: dict[str, str],
    ) -> dict[str, Any]:
        """AdminInitiateAuth: USER_AUTH here, other flows in moto."""
        if auth_flow != USER_AUTH:
            result: dict[str, Any] = super().admin_initiate_auth(
                user_pool_id, client_id, auth_flow, auth_parameters
            )
            return result
        pool = self.describe_user_pool(user_pool_id)
        client = pool.clients.get(client_id)
        if client is None:
            raise ResourceNotFoundError(client_id)
        return self._start(pool, client, auth_parameters or {})

    def respond_to_auth_challenge(
        self,
        session: str,
        client_id: str,
        challenge_name: str,
        challenge_responses: dict[str, str],
    ) -> dict[str, Any]:
        """(Admin)RespondToAuthChallenge: our sessions and challenge names here, the rest in moto."""
        runtime = current_runtime()
        if runtime.sessions.owns(session) or (
            challenge_name in OWN_CHALLENGES and session not in self.sessions
        ):
            return self._respond(runtime, session, client_id, challenge_name, challenge_responses or {})
        result: dict[str, Any] = super().respond_to_auth_challenge(
            session, client_id, challenge_name, challenge_responses
        )
        return result

    # ---- USER_AUTH: first step ---------------------------------------------------------------------
    def _start(
        self, pool: CognitoIdpUserPool, client: CognitoIdpUserPoolClient, params: dict[str, str]
    ) -> dict[str, Any]:
        runtime = current_runtime()
        _require_user_auth(client)
        username = _required(params, "USERNAME")
        _check_secret_hash(client, username, params.get("SECRET_HASH"))
        preferred = params.get("PREFERRED_CHALLENGE")

        user = find_user(pool, username)
        if user is None:
            if _prevents_user_existence_errors(client, runtime):
                return self._phantom_start(runtime, pool, client, username, preferred)
            raise UserNotFoundError("User does not exist.")
        if not user.enabled:
            raise NotAuthorizedError(MSG_USER_DISABLED)

        available = available_challenges(pool, user)
        if not available:
            # [inferred] Cognito's reply for a user with no usable first factor is not documented.
            raise InvalidParameterException("No sign-in factor is available for this user.")
        if preferred in available:
            if preferred in CHANNELS:
                return self._send_code(runtime, pool, client, user, preferred)
            if preferred == PASSWORD and params.get("PASSWORD"):
                return self._password_sign_in(pool, client, user, params["PASSWORD"])
        if runtime.settings.auto_select_single_factor and len(available) == 1 and available[0] in CHANNELS:
            return self._send_code(runtime, pool, client, user, available[0])
        session = runtime.sessions.create(
            user_pool_id=pool.id,
            client_id=client.id,
            username=user.username,
            challenge=SELECT_CHALLENGE,
            lifetime_seconds=_lifetime_seconds(runtime, client),
            available_challenges=tuple(available),
        )
        return _select_challenge_response(session, user.username)

    def _send_code(
        self,
        runtime: EmulatorRuntime,
        pool: CognitoIdpUserPool,
        client: CognitoIdpUserPoolClient,
        user: CognitoIdpUser,
        challenge: str,
    ) -> dict[str, Any]:
        channel = CHANNELS[challenge]
        destination = str(user.attribute_lookup[channel.attribute])
        code = generate_code()
        message, subject = render_message(channel.medium, code, pool.extended_config)
        runtime.outbox.deliver(
            destination=destination,
            medium=channel.medium,
            code=code,
            message=message,
            subject=subject,
            username=user.username,
            user_pool_id=pool.id,
            client_id=client.id,
        )
        session = runtime.sessions.create(
            user_pool_id=pool.id,
            client_id=client.id,
            username=user.username,
            challenge=challenge,
            lifetime_seconds=_lifetime_seconds(runtime, client),
            code=code,
        )
        return _otp_challenge_response(
            session, user.username, channel.medium, mask(channel.medium, destination)
        )

    def _phantom_start(
        self,
        runtime: EmulatorRuntime,
        pool: CognitoIdpUserPool,
        client: CognitoIdpUserPoolClient,
        username: str,
        preferred: str | None,
    ) -> dict[str, Any]:
        """[doc] ``PreventUserExistenceErrors=ENABLED``: an unknown user gets a plausible challenge.

        Nothing is delivered and every code is wrong. [inferred] What is offered: what the pool allows.
        """
        allowed = allowed_first_factors(pool)
        offered = [
            c for c in CHALLENGE_ORDER if c in allowed and (c not in CHANNELS or pool.mfa_config != "ON")
        ]
        # In a pool whose usernames are generated, a real user's USERNAME comes back as a UUID; do the same.
        shown_username = str(uuid.uuid4()) if pool.extended_config.get("UsernameAttributes") else username
        lifetime = _lifetime_seconds(runtime, client)
        if preferred in CHANNELS and preferred in offered:
            return self._phantom_otp(runtime, pool, client, username, shown_username, preferred, lifetime)
        session = runtime.sessions.create(
            user_pool_id=pool.id,
            client_id=client.id,
            username=None,
            challenge=SELECT_CHALLENGE,
            lifetime_seconds=lifetime,
            available_challenges=tuple(offered),
        )
        return _select_challenge_response(session, shown_username)

    def _phantom_otp(
        self,
        runtime: EmulatorRuntime,
        pool: CognitoIdpUserPool,
        client: CognitoIdpUserPoolClient,
        username: str,
        shown_username: str,
        challenge: str,
        lifetime: float,
    ) -> dict[str, Any]:
        medium = CHANNELS[challenge].medium
        session = runtime.sessions.create(
            user_pool_id=pool.id,
            client_id=client.id,
            username=None,
            challenge=challenge,
            lifetime_seconds=lifetime,
        )
        return _otp_challenge_response(
            session, shown_username, medium, _phantom_destination(medium, username)
        )

    # ---- USER_AUTH: answers -----------------------------------------------------------------------
    def _respond(
        self,
        runtime: EmulatorRuntime,
        session_id: str,
        client_id: str,
        challenge_name: str,
        responses: dict[str, str],
    ) -> dict[str, Any]:
        session, verdict = runtime.sessions.get_live(session_id) if session_id else (None, None)
        if session is None:
            raise NotAuthorizedError(
                MSG_EXPIRED_SESSION if verdict is AnswerVerdict.EXPIRED else MSG_INVALID_SESSION
            )
        if session.client_id != client_id:
            raise NotAuthorizedError(MSG_INVALID_SESSION)  # [inferred] a session belongs to its client
        pool = self.user_pools.get(session.user_pool_id)
        client = pool.clients.get(client_id) if pool is not None else None
        if pool is None or client is None:
            raise ResourceNotFoundError(client_id)
        username = _required(responses, "USERNAME")
        _check_secret_hash(client, username, responses.get("SECRET_HASH"))
        user: CognitoIdpUser | None = None
        if session.username is not None:
            user = find_user(pool, username)
            if user is None or user.username != session.username:
                raise NotAuthorizedError(
                    MSG_INVALID_SESSION
                )  # [inferred] USERNAME must be the session's user
            if not user.enabled:
                raise NotAuthorizedError(MSG_USER_DISABLED)
        if challenge_name != session.challenge:
            # [inferred] Answering another challenge than the one asked leaves the session intact.
            raise InvalidParameterException(
                f"Challenge {challenge_name} does not match the session's challenge {session.challenge}."
            )
        if session.challenge == SELECT_CHALLENGE:
            return self._answer_selection(runtime, pool, client, session, user, username, responses)
        return self._answer_code(runtime, pool, client, session, user, responses)

    def _answer_selection(
        self,
        runtime: EmulatorRuntime,
        pool: CognitoIdpUserPool,
        client: CognitoIdpUserPoolClient,
        session: AuthSession,
        user: CognitoIdpUser | None,
        username: str,
        responses: dict[str, str],
    ) -> dict[str, Any]:
        answer = _required(responses, "ANSWER")
        if answer not in session.available_challenges:
            raise InvalidParameterException(f"{answer} is not an available challenge for this user.")
        if answer == PASSWORD:
            password = _required(responses, "PASSWORD")
            runtime.sessions.consume(session.id)
            if user is None:
                raise NotAuthorizedError("Incorrect username or password.")
            return self._password_sign_in(pool, client, user, password)
        # Each step gets a new session; the selection session is spent.
        runtime.sessions.consume(session.id)
        if user is None:
            shown = username if not pool.extended_config.get("UsernameAttributes") else str(uuid.uuid4())
            return self._phantom_otp(
                runtime, pool, client, username, shown, answer, _lifetime_seconds(runtime, client)
            )
        return self._send_code(runtime, pool, client, user, answer)

    def _answer_code(
        self,
        runtime: EmulatorRuntime,
        pool: CognitoIdpUserPool,
        client: CognitoIdpUserPoolClient,
        session: AuthSession,
        user: CognitoIdpUser | None,
        responses: dict[str, str],
    ) -> dict[str, Any]:
        channel = CHANNELS[session.challenge]
        code = _required(responses, channel.code_parameter)
        verdict = runtime.sessions.check_code(session.id, code, runtime.settings.attempt_cap)
        if verdict is AnswerVerdict.MISMATCH:
            raise CodeMismatchException(MSG_CODE_MISMATCH)
        if verdict is AnswerVerdict.EXPIRED:
            raise NotAuthorizedError(MSG_EXPIRED_SESSION)
        if verdict is not AnswerVerdict.ACCEPTED or user is None:
            raise NotAuthorizedError(MSG_INVALID_SESSION)
        # [doc] Proving control of the channel verifies it, and confirms a user who signed up.
        user.update_attributes([{"Name": channel.verified_attribute, "Value": "true"}])
        if user.status == UserStatus.UNCONFIRMED:
            user.status = UserStatus.CONFIRMED
        tokens: dict[str, Any] = self._log_user_in(pool, client, user.username)
        return tokens

    def _password_sign_in(
        self,
        pool: CognitoIdpUserPool,
        client: CognitoIdpUserPoolClient,
        user: CognitoIdpUser,
        password: str,
    ) -> dict[str, Any]:
        """The PASSWORD first factor, with moto's rules for the user states after it."""
        if not user.password or not hmac.compare_digest(str(user.password).encode(), password.encode()):
            raise NotAuthorizedError("Incorrect username or password.")
        if user.status == UserStatus.UNCONFIRMED:
            raise UserNotConfirmedException("User is not confirmed.")
        if user.status in (UserStatus.FORCE_CHANGE_PASSWORD, UserStatus.RESET_REQUIRED):
            # Hand over to moto's NEW_PASSWORD_REQUIRED handling through its own session table.
            moto_session = str(uuid.uuid4())
            self.sessions[moto_session] = (user.username, pool)
            return {
                "ChallengeName": "NEW_PASSWORD_REQUIRED",
                "ChallengeParameters": {"USERNAME": user.username},
                "Session": moto_session,
            }
        tokens: dict[str, Any] = self._log_user_in(pool, client, user.username)
        return tokens

    def _pool_and_client(self, client_id: str) -> tuple[CognitoIdpUserPool, CognitoIdpUserPoolClient]:
        for pool in self.user_pools.values():
            client = pool.clients.get(client_id)
            if client is not None:
                return pool, client
        raise ResourceNotFoundError(client_id)


# ---- small rules ---------------------------------------------------------------------------------
def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise InvalidParameterException(f"Missing required parameter {name}")
    return value


def _require_user_auth(client: CognitoIdpUserPoolClient) -> None:
    # [doc] Without ALLOW_USER_AUTH on the app client the flow is refused (message as observed).
    if "ALLOW_USER_AUTH" not in (client.extended_config.get("ExplicitAuthFlows") or ()):
        raise InvalidParameterException("USER_AUTH flow not enabled for this client")


def _check_secret_hash(client: CognitoIdpUserPoolClient, username: str, provided: str | None) -> None:
    # [doc] A client with a secret needs SECRET_HASH on every call, computed with the request's USERNAME.
    if not client.generate_secret:
        return
    if not provided:
        raise NotAuthorizedError(f"Client {client.id} is configured for secret but secret was not received")
    expected = secret_hash(username=username, client_id=client.id, client_secret=str(client.secret))
    if not hmac.compare_digest(expected.encode(), provided.encode()):
        raise NotAuthorizedError(f"Unable to verify secret hash for client {client.id}")


def _prevents_user_existence_errors(client: CognitoIdpUserPoolClient, runtime: EmulatorRuntime) -> bool:
    mode = client.extended_config.get("PreventUserExistenceErrors")
    return (mode or runtime.settings.default_prevent_user_existence_errors) == "ENABLED"


def _lifetime_seconds(runtime: EmulatorRuntime, client: CognitoIdpUserPoolClient) -> float:
    override = runtime.settings.code_lifetime_seconds
    if override is not None:
        return float(override)
    minutes = client.extended_config.get("AuthSessionValidity") or DEFAULT_AUTH_SESSION_VALIDITY_MINUTES
    return float(minutes) * 60.0


def _phantom_destination(medium: DeliveryMedium, username: str) -> str:
    """[inferred] A plausible masked destination for an unknown user, stable for the same name."""
    if medium == "EMAIL":
        return mask_email(username if "@" in username else f"{username}@example.com")
    if username.startswith("+") and username[1:].isdigit():
        return mask_phone(username)
    digits = "".join(str(b % 10) for b in hashlib.sha256(username.encode()).digest()[:4])
    return mask_phone("+1555555" + digits)


def _select_challenge_response(session: AuthSession, username: str) -> dict[str, Any]:
    return {
        "ChallengeName": SELECT_CHALLENGE,
        "Session": session.id,
        "ChallengeParameters": {"USERNAME": username},
        "AvailableChallenges": list(session.available_challenges),
    }


def _otp_challenge_response(
    session: AuthSession, username: str, medium: DeliveryMedium, masked_destination: str
) -> dict[str, Any]:
    return {
        "ChallengeName": session.challenge,
        "Session": session.id,
        "ChallengeParameters": {
            "CODE_DELIVERY_DELIVERY_MEDIUM": medium,
            "CODE_DELIVERY_DESTINATION": masked_destination,
            "USERNAME": username,
        },
    }


def install() -> None:
    """Make moto build :class:`PasswordlessBackend` for cognito-idp. Idempotent; call before serving.

    Backends moto already created keep their class, so call this before the first request.
    """
    cognitoidp_backends.backend = PasswordlessBackend
    for account_backends in cognitoidp_backends.values():
        account_backends.backend = PasswordlessBackend
