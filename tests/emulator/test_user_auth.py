"""USER_AUTH with EMAIL_OTP / SMS_OTP, rule by rule, over HTTP against a running emulator."""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from .support import Demo, make_client, outbox


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    """(code, message) of a botocore ClientError."""
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


# ---- happy paths --------------------------------------------------------------------------------------
def test_email_otp_sends_an_8_digit_code_and_signs_in(demo: Demo) -> None:
    started = demo.start("ada", "EMAIL_OTP")

    assert started["ChallengeName"] == "EMAIL_OTP"
    assert started["ChallengeParameters"]["CODE_DELIVERY_DELIVERY_MEDIUM"] == "EMAIL"
    assert started["ChallengeParameters"]["CODE_DELIVERY_DESTINATION"] == "a***@e***"
    assert "AvailableChallenges" not in started
    code = demo.last_code("ada@example.com")
    assert re.fullmatch(r"\d{8}", code)

    done = demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE=code)

    result = done["AuthenticationResult"]
    assert {"AccessToken", "IdToken", "RefreshToken"} <= set(result)
    assert result["TokenType"] == "Bearer"
    assert result["ExpiresIn"] == 3600


def test_sms_otp_sends_to_the_phone_and_masks_all_but_four_digits(demo: Demo) -> None:
    started = demo.start("alan", "SMS_OTP")

    assert started["ChallengeName"] == "SMS_OTP"
    assert started["ChallengeParameters"]["CODE_DELIVERY_DELIVERY_MEDIUM"] == "SMS"
    assert started["ChallengeParameters"]["CODE_DELIVERY_DESTINATION"] == "+*******0101"
    [message] = demo.outbox("+15555550101")
    assert message["medium"] == "SMS"
    assert message["code"] in message["message"]

    done = demo.answer("SMS_OTP", started["Session"], "alan", SMS_OTP_CODE=message["code"])
    assert "IdToken" in done["AuthenticationResult"]


def test_sessions_are_opaque_unique_and_within_cognitos_length_limits(demo: Demo) -> None:
    sessions = {demo.start("ada", "EMAIL_OTP")["Session"] for _ in range(5)}
    assert len(sessions) == 5
    assert all(20 <= len(s) <= 2048 for s in sessions)


def test_admin_initiate_and_admin_respond_run_the_same_flow(demo: Demo) -> None:
    client_id, pool_id = demo.seed.client_id, demo.seed.user_pool_id
    started = demo.client.admin_initiate_auth(
        UserPoolId=pool_id,
        ClientId=client_id,
        AuthFlow="USER_AUTH",
        AuthParameters={
            "USERNAME": "grace",
            "PREFERRED_CHALLENGE": "EMAIL_OTP",
            "SECRET_HASH": demo.secret_hash("grace"),
        },
    )
    assert started["ChallengeName"] == "EMAIL_OTP"
    done = demo.client.admin_respond_to_auth_challenge(
        UserPoolId=pool_id,
        ClientId=client_id,
        ChallengeName="EMAIL_OTP",
        Session=started["Session"],
        ChallengeResponses={
            "USERNAME": "grace",
            "EMAIL_OTP_CODE": demo.last_code("grace@example.com"),
            "SECRET_HASH": demo.secret_hash("grace"),
        },
    )
    assert "IdToken" in done["AuthenticationResult"]


# ---- sign-in names ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("username", "preferred", "destination"),
    [("ada@example.com", "EMAIL_OTP", "ada@example.com"), ("+15555550100", "SMS_OTP", "+15555550100")],
)
def test_a_verified_alias_signs_in_like_the_username(
    demo: Demo, username: str, preferred: str, destination: str
) -> None:
    started = demo.start(username, preferred)
    assert started["ChallengeName"] == preferred
    assert started["ChallengeParameters"]["USERNAME"] == "ada"

    # SECRET_HASH is computed with the USERNAME each request carries, here the alias.
    done = demo.answer(
        preferred, started["Session"], username, **{f"{preferred}_CODE": demo.last_code(destination)}
    )
    assert "IdToken" in done["AuthenticationResult"]


def test_an_unverified_alias_is_not_a_sign_in_name(demo: Demo) -> None:
    # hedy's email is unverified: as a sign-in name it names nobody (ENABLED client: a phantom challenge).
    started = demo.start("hedy@example.com", "EMAIL_OTP")
    assert started["ChallengeName"] == "EMAIL_OTP"
    assert demo.outbox("hedy@example.com") == []


def test_username_attributes_pool_signs_in_with_the_email(cognito: Any, emulator: Any) -> None:
    pool_id = cognito.create_user_pool(
        PoolName="by-email",
        UsernameAttributes=["email"],
        Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["EMAIL_OTP"]}},
    )["UserPool"]["Id"]
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName="c", ExplicitAuthFlows=["ALLOW_USER_AUTH"]
    )["UserPoolClient"]["ClientId"]
    cognito.admin_create_user(UserPoolId=pool_id, Username="joan@example.com", MessageAction="SUPPRESS")

    started = cognito.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_AUTH",
        AuthParameters={"USERNAME": "joan@example.com", "PREFERRED_CHALLENGE": "EMAIL_OTP"},
    )
    assert started["ChallengeName"] == "EMAIL_OTP"
    assert started["ChallengeParameters"]["CODE_DELIVERY_DESTINATION"] == "j***@e***"


# ---- choosing the challenge -----------------------------------------------------------------------------
def test_no_preference_offers_select_challenge_and_answer_sends_the_code(demo: Demo) -> None:
    selection = demo.start("ada")
    assert selection["ChallengeName"] == "SELECT_CHALLENGE"
    assert selection["AvailableChallenges"] == ["EMAIL_OTP", "SMS_OTP", "PASSWORD"]
    assert demo.outbox() == []

    chosen = demo.answer("SELECT_CHALLENGE", selection["Session"], "ada", ANSWER="SMS_OTP")
    assert chosen["ChallengeName"] == "SMS_OTP"
    assert chosen["Session"] != selection["Session"]
    assert "AvailableChallenges" not in chosen
    done = demo.answer("SMS_OTP", chosen["Session"], "ada", SMS_OTP_CODE=demo.last_code("+15555550100"))
    assert "IdToken" in done["AuthenticationResult"]

    # The selection session was spent by the answer.
    with pytest.raises(ClientError) as excinfo:
        demo.answer("SELECT_CHALLENGE", selection["Session"], "ada", ANSWER="EMAIL_OTP")
    assert error_of(excinfo)[0] == "NotAuthorizedException"


def test_select_challenge_can_be_answered_with_a_password(demo: Demo) -> None:
    demo.client.admin_set_user_password(
        UserPoolId=demo.seed.user_pool_id, Username="grace", Password="Known-passw0rd!", Permanent=True
    )
    selection = demo.start("grace")
    assert selection["AvailableChallenges"] == ["EMAIL_OTP", "PASSWORD"]
    done = demo.answer(
        "SELECT_CHALLENGE", selection["Session"], "grace", ANSWER="PASSWORD", PASSWORD="Known-passw0rd!"
    )
    assert "IdToken" in done["AuthenticationResult"]


def test_a_preferred_factor_the_user_lacks_falls_back_to_select_challenge(demo: Demo) -> None:
    started = demo.start("grace", "SMS_OTP")  # grace has no phone number
    assert started["ChallengeName"] == "SELECT_CHALLENGE"
    assert started["AvailableChallenges"] == ["EMAIL_OTP", "PASSWORD"]
    assert demo.outbox() == []


def test_a_factor_not_in_allowed_first_auth_factors_is_not_offered(demo: Demo) -> None:
    pool_id = demo.seed.user_pool_id
    demo.client.update_user_pool(
        UserPoolId=pool_id,
        Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["PASSWORD", "EMAIL_OTP"]}},
    )
    described = demo.client.describe_user_pool(UserPoolId=pool_id)["UserPool"]
    assert described["Policies"]["SignInPolicy"]["AllowedFirstAuthFactors"] == ["PASSWORD", "EMAIL_OTP"]

    started = demo.start("ada", "SMS_OTP")
    assert started["ChallengeName"] == "SELECT_CHALLENGE"
    assert started["AvailableChallenges"] == ["EMAIL_OTP", "PASSWORD"]
    assert demo.outbox("+15555550100") == []
    # Settings fixed at creation survive the update: the email alias still signs in.
    assert demo.start("ada@example.com", "EMAIL_OTP")["ChallengeName"] == "EMAIL_OTP"


def test_create_user_pool_keeps_the_sign_in_policy(cognito: Any) -> None:
    pool = cognito.create_user_pool(
        PoolName="p", Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["EMAIL_OTP", "PASSWORD"]}}
    )["UserPool"]
    described = cognito.describe_user_pool(UserPoolId=pool["Id"])["UserPool"]
    assert described["Policies"]["SignInPolicy"]["AllowedFirstAuthFactors"] == ["EMAIL_OTP", "PASSWORD"]
    assert described["Policies"]["PasswordPolicy"]["MinimumLength"] == 8  # AWS keeps the default one


# ---- configuration errors -----------------------------------------------------------------------------
def test_user_auth_needs_allow_user_auth_on_the_client(demo: Demo) -> None:
    other = demo.client.create_user_pool_client(
        UserPoolId=demo.seed.user_pool_id,
        ClientName="no-user-auth",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"],
    )["UserPoolClient"]
    with pytest.raises(ClientError) as excinfo:
        demo.client.initiate_auth(
            ClientId=other["ClientId"], AuthFlow="USER_AUTH", AuthParameters={"USERNAME": "ada"}
        )
    code, message = error_of(excinfo)
    assert code == "InvalidParameterException"
    assert "not enabled for this client" in message


@pytest.mark.parametrize("secret_hash", [None, "d3JvbmcgaGFzaA=="])
def test_initiate_auth_refuses_a_missing_or_wrong_secret_hash(demo: Demo, secret_hash: str | None) -> None:
    params = {"USERNAME": "ada", "PREFERRED_CHALLENGE": "EMAIL_OTP"}
    if secret_hash:
        params["SECRET_HASH"] = secret_hash
    with pytest.raises(ClientError) as excinfo:
        demo.client.initiate_auth(ClientId=demo.seed.client_id, AuthFlow="USER_AUTH", AuthParameters=params)
    assert error_of(excinfo)[0] == "NotAuthorizedException"
    assert demo.outbox() == []


@pytest.mark.parametrize("secret_hash", [None, "d3JvbmcgaGFzaA=="])
def test_every_challenge_response_needs_the_secret_hash(demo: Demo, secret_hash: str | None) -> None:
    started = demo.start("ada", "EMAIL_OTP")
    responses = {"USERNAME": "ada", "EMAIL_OTP_CODE": demo.last_code("ada@example.com")}
    if secret_hash:
        responses["SECRET_HASH"] = secret_hash
    with pytest.raises(ClientError) as excinfo:
        demo.client.respond_to_auth_challenge(
            ClientId=demo.seed.client_id,
            ChallengeName="EMAIL_OTP",
            Session=started["Session"],
            ChallengeResponses=responses,
        )
    assert error_of(excinfo)[0] == "NotAuthorizedException"


# ---- codes and sessions ---------------------------------------------------------------------------------
def test_a_wrong_code_is_a_mismatch_and_the_same_session_still_works(demo: Demo) -> None:
    started = demo.start("ada", "EMAIL_OTP")
    with pytest.raises(ClientError) as excinfo:
        demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE="00000000")
    assert error_of(excinfo) == ("CodeMismatchException", "Invalid code received for user")

    done = demo.answer(
        "EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE=demo.last_code("ada@example.com")
    )
    assert "IdToken" in done["AuthenticationResult"]


def test_after_the_attempt_cap_even_the_right_code_is_refused(demo: Demo) -> None:
    started = demo.start("ada", "EMAIL_OTP")
    code = demo.last_code("ada@example.com")
    wrong = "11111111" if code != "11111111" else "22222222"
    for _ in range(3):  # default cap: three wrong answers, each a mismatch
        with pytest.raises(ClientError) as excinfo:
            demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE=wrong)
        assert error_of(excinfo)[0] == "CodeMismatchException"

    with pytest.raises(ClientError) as excinfo:
        demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE=code)
    assert error_of(excinfo)[0] == "NotAuthorizedException"


def test_the_attempt_cap_is_a_setting(demo: Demo, emulator: Any) -> None:
    emulator.runtime.update_settings({"attempt_cap": 1})
    started = demo.start("ada", "EMAIL_OTP")
    code = demo.last_code("ada@example.com")
    with pytest.raises(ClientError):
        demo.answer(
            "EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE="0" * 8 if code != "0" * 8 else "1" * 8
        )
    with pytest.raises(ClientError) as excinfo:
        demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE=code)
    assert error_of(excinfo)[0] == "NotAuthorizedException"


def test_a_session_is_single_use_after_success(demo: Demo) -> None:
    started = demo.start("ada", "EMAIL_OTP")
    code = demo.last_code("ada@example.com")
    demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE=code)

    with pytest.raises(ClientError) as excinfo:
        demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE=code)
    assert error_of(excinfo)[0] == "NotAuthorizedException"


def test_an_unknown_session_is_not_authorized(demo: Demo) -> None:
    with pytest.raises(ClientError) as excinfo:
        demo.answer("EMAIL_OTP", "x" * 64, "ada", EMAIL_OTP_CODE="12345678")
    assert error_of(excinfo) == ("NotAuthorizedException", "Invalid session for the user.")


def test_each_initiate_sends_a_new_code_and_the_old_session_keeps_its_own(demo: Demo) -> None:
    first = demo.start("ada", "EMAIL_OTP")
    first_code = demo.last_code("ada@example.com")
    demo.start("ada", "EMAIL_OTP")
    assert len(demo.outbox("ada@example.com")) == 2

    done = demo.answer("EMAIL_OTP", first["Session"], "ada", EMAIL_OTP_CODE=first_code)
    assert "IdToken" in done["AuthenticationResult"]


# ---- user state -----------------------------------------------------------------------------------------
def test_signing_in_confirms_an_unconfirmed_user_and_verifies_the_email(demo: Demo) -> None:
    before = demo.user("hedy")
    assert before["UserStatus"] == "UNCONFIRMED"
    assert before["attrs"].get("email_verified") != "true"

    started = demo.start("hedy", "EMAIL_OTP")
    demo.answer("EMAIL_OTP", started["Session"], "hedy", EMAIL_OTP_CODE=demo.last_code("hedy@example.com"))

    after = demo.user("hedy")
    assert after["UserStatus"] == "CONFIRMED"
    assert after["attrs"]["email_verified"] == "true"


def test_sms_sign_in_verifies_the_phone_number_only(demo: Demo) -> None:
    pool_id = demo.seed.user_pool_id
    demo.client.admin_create_user(
        UserPoolId=pool_id,
        Username="rosalind",
        MessageAction="SUPPRESS",
        UserAttributes=[
            {"Name": "phone_number", "Value": "+15555550102"},
            {"Name": "email", "Value": "rosalind@example.com"},
        ],
    )
    started = demo.start("rosalind", "SMS_OTP")
    demo.answer("SMS_OTP", started["Session"], "rosalind", SMS_OTP_CODE=demo.last_code("+15555550102"))

    attrs = demo.user("rosalind")["attrs"]
    assert attrs["phone_number_verified"] == "true"
    assert attrs.get("email_verified") != "true"


def test_a_disabled_user_is_not_authorized(demo: Demo) -> None:
    with pytest.raises(ClientError) as excinfo:
        demo.start("edsger", "EMAIL_OTP")
    assert error_of(excinfo) == ("NotAuthorizedException", "User is disabled.")
    assert demo.outbox("edsger@example.com") == []


# ---- user existence -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["LEGACY", None])
def test_legacy_clients_report_an_unknown_user(demo: Demo, mode: str | None) -> None:
    extra = {"PreventUserExistenceErrors": mode} if mode else {}
    other = demo.client.create_user_pool_client(
        UserPoolId=demo.seed.user_pool_id, ClientName="legacy", ExplicitAuthFlows=["ALLOW_USER_AUTH"], **extra
    )["UserPoolClient"]
    with pytest.raises(ClientError) as excinfo:
        demo.client.initiate_auth(
            ClientId=other["ClientId"],
            AuthFlow="USER_AUTH",
            AuthParameters={"USERNAME": "nobody", "PREFERRED_CHALLENGE": "EMAIL_OTP"},
        )
    assert error_of(excinfo)[0] == "UserNotFoundException"


def test_enabled_clients_give_an_unknown_user_a_plausible_challenge_that_never_succeeds(demo: Demo) -> None:
    started = demo.start("nobody@example.com", "EMAIL_OTP")
    assert started["ChallengeName"] == "EMAIL_OTP"
    assert started["ChallengeParameters"]["CODE_DELIVERY_DELIVERY_MEDIUM"] == "EMAIL"
    assert started["ChallengeParameters"]["CODE_DELIVERY_DESTINATION"] == "n***@e***"
    assert demo.outbox() == []

    for _ in range(3):
        with pytest.raises(ClientError) as excinfo:
            demo.answer("EMAIL_OTP", started["Session"], "nobody@example.com", EMAIL_OTP_CODE="12345678")
        assert error_of(excinfo)[0] == "CodeMismatchException"
    with pytest.raises(ClientError) as excinfo:
        demo.answer("EMAIL_OTP", started["Session"], "nobody@example.com", EMAIL_OTP_CODE="12345678")
    assert error_of(excinfo)[0] == "NotAuthorizedException"


def test_enabled_clients_offer_an_unknown_user_the_pools_factors(demo: Demo) -> None:
    selection = demo.start("nobody")
    assert selection["ChallengeName"] == "SELECT_CHALLENGE"
    assert selection["AvailableChallenges"] == ["EMAIL_OTP", "SMS_OTP", "PASSWORD"]
    chosen = demo.answer("SELECT_CHALLENGE", selection["Session"], "nobody", ANSWER="SMS_OTP")
    assert chosen["ChallengeName"] == "SMS_OTP"
    assert demo.outbox() == []


# ---- templates and moto's own flows ---------------------------------------------------------------------
def test_the_message_uses_the_pools_template(cognito: Any) -> None:
    pool_id = cognito.create_user_pool(
        PoolName="templated",
        Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["SMS_OTP"]}},
        SmsVerificationMessage="Emulated bank: your code is {####}.",
        VerificationMessageTemplate={"SmsMessage": "Emulated bank: your code is {####}."},
    )["UserPool"]["Id"]
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName="c", ExplicitAuthFlows=["ALLOW_USER_AUTH"]
    )["UserPoolClient"]["ClientId"]
    cognito.admin_create_user(
        UserPoolId=pool_id,
        Username="kat",
        MessageAction="SUPPRESS",
        UserAttributes=[{"Name": "phone_number", "Value": "+15555550109"}],
    )
    cognito.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_AUTH",
        AuthParameters={"USERNAME": "kat", "PREFERRED_CHALLENGE": "SMS_OTP"},
    )
    [message] = outbox(cognito.meta.endpoint_url, "+15555550109")
    assert message["message"] == f"Emulated bank: your code is {message['code']}."


def test_moto_password_flows_still_work(cognito: Any) -> None:
    pool_id = cognito.create_user_pool(PoolName="classic")["UserPool"]["Id"]
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName="c", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    cognito.admin_create_user(UserPoolId=pool_id, Username="bob", MessageAction="SUPPRESS")
    cognito.admin_set_user_password(UserPoolId=pool_id, Username="bob", Password="Passw0rd!x", Permanent=True)

    public = cognito.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "bob", "PASSWORD": "Passw0rd!x"},
    )
    admin = cognito.admin_initiate_auth(
        UserPoolId=pool_id,
        ClientId=client_id,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "bob", "PASSWORD": "Passw0rd!x"},
    )
    assert "IdToken" in public["AuthenticationResult"]
    assert "IdToken" in admin["AuthenticationResult"]
    refreshed = cognito.initiate_auth(
        ClientId=client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": public["AuthenticationResult"]["RefreshToken"]},
    )
    assert "AccessToken" in refreshed["AuthenticationResult"]
    with pytest.raises(ClientError) as excinfo:
        cognito.initiate_auth(
            ClientId=client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": "bob", "PASSWORD": "nope"},
        )
    assert error_of(excinfo)[0] == "NotAuthorizedException"


def test_two_emulators_share_moto_state_but_not_outboxes(demo: Demo) -> None:
    from cognito_emulator import EmulatorServer

    with EmulatorServer(port=0) as other:
        Demo(other.endpoint_url, demo.seed, make_client(other.endpoint_url)).start("ada", "EMAIL_OTP")
        assert demo.outbox() == []


def test_preferred_password_with_the_password_signs_in_directly(demo: Demo) -> None:
    demo.client.admin_set_user_password(
        UserPoolId=demo.seed.user_pool_id, Username="ada", Password="Known-passw0rd!", Permanent=True
    )
    done = demo.start("ada", "PASSWORD", PASSWORD="Known-passw0rd!")
    assert "IdToken" in done["AuthenticationResult"]
    with pytest.raises(ClientError) as excinfo:
        demo.start("ada", "PASSWORD", PASSWORD="Wrong-passw0rd!")
    assert error_of(excinfo)[0] == "NotAuthorizedException"


def test_a_single_otp_factor_can_be_sent_without_select_challenge(demo: Demo, emulator: Any) -> None:
    demo.client.admin_create_user(
        UserPoolId=demo.seed.user_pool_id,
        Username="barbara",
        MessageAction="SUPPRESS",  # no password: EMAIL_OTP is her only factor
        UserAttributes=[{"Name": "email", "Value": "barbara@example.com"}],
    )
    assert demo.start("barbara")["ChallengeName"] == "SELECT_CHALLENGE"  # documented default

    emulator.runtime.update_settings({"auto_select_single_factor": True})
    assert demo.start("barbara")["ChallengeName"] == "EMAIL_OTP"
