"""Clerk RS256 tokens (JWKS and PEM), dev HS256 tokens: every bad token is a 401."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime

import jwt
import pytest

from tests.support.clerk import ISSUER, ClerkKeys, JwksServer

KEYS = ClerkKeys()


@pytest.fixture(scope="module")
def jwks():
    with JwksServer([KEYS]) as server:
        yield server


@pytest.fixture()
def clerk_client(settings, jwks, joined_app):
    app = joined_app(
        settings.with_(
            auth_mode="clerk",
            clerk_jwks_url=jwks.url,
            clerk_issuer=ISSUER,
            clerk_authorized_parties=("http://localhost:5173",),
        )
    )
    return app.test_client()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_valid_clerk_token_provisions_the_user(clerk_client):
    response = clerk_client.get("/api/users/me", headers=bearer(KEYS.token("user_abc")))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["clerk_id"] == "user_abc"
    assert body["plan"] == "free"
    assert body["credits"]["total"] == 10


def _unsigned(claims: dict) -> str:
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def _now():
    return int(time.time())


OTHER = ClerkKeys(kid="ins_key_1")  # same kid, different key: a forged signature

BAD_TOKENS = {
    "garbage": lambda: "not-a-jwt",
    "expired": lambda: KEYS.token(exp=_now() - 3600, iat=_now() - 7200, nbf=_now() - 7200),
    "not_yet_valid": lambda: KEYS.token(nbf=_now() + 3600),
    "wrong_signature": lambda: OTHER.token(),
    "alg_none": lambda: _unsigned({"sub": "user_x", "iss": ISSUER, "sid": "s", "exp": _now() + 60}),
    "hs256_with_public_key": lambda: jwt.encode(
        {"sub": "user_x", "iss": ISSUER, "sid": "s", "exp": _now() + 60},
        "a-shared-secret-that-is-long-enough-32b",
        algorithm="HS256",
    ),
    "wrong_issuer": lambda: KEYS.token(iss="https://evil.example"),
    "wrong_azp": lambda: KEYS.token(azp="https://evil.example"),
    "no_sid": lambda: KEYS.token(sid=None),
    "no_sub": lambda: KEYS.token(sub=None),
    "unknown_kid": lambda: KEYS.token(kid="ins_unknown"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_clerk_tokens_are_401(clerk_client, case):
    response = clerk_client.get("/api/users/me", headers=bearer(BAD_TOKENS[case]()))
    assert response.status_code == 401, (case, response.get_json())
    assert response.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer    ", "token"])
def test_malformed_authorization_header_is_401(client, header):
    response = client.get("/api/users/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_unknown_kids_refetch_the_jwks_at_most_once_a_minute(settings, joined_app):
    keys = ClerkKeys(kid="k1")
    with JwksServer([keys]) as server:
        app = joined_app(
            settings.with_(auth_mode="clerk", clerk_jwks_url=server.url, clerk_issuer=ISSUER)
        )
        client = app.test_client()
        assert client.get("/api/users/me", headers=bearer(keys.token())).status_code == 200
        assert server.hits == 1
        for i in range(20):
            response = client.get("/api/users/me", headers=bearer(keys.token(kid=f"random-{i}")))
            assert response.status_code == 401
        assert server.hits == 1  # the cache refused to refetch inside the minute


def test_pem_key_verifies_without_network(settings, joined_app):
    app = joined_app(
        settings.with_(auth_mode="clerk", clerk_jwt_key=KEYS.public_pem, clerk_issuer=ISSUER)
    )
    client = app.test_client()
    assert client.get("/api/users/me", headers=bearer(KEYS.token("user_pem"))).status_code == 200
    assert client.get("/api/users/me", headers=bearer(OTHER.token())).status_code == 401


def test_dev_token_works_in_dev_mode(client, token):
    response = client.get("/api/users/me", headers=bearer(token("dev_user", email="d@x.io")))
    assert response.status_code == 200
    assert response.get_json()["email"] == "d@x.io"


def test_dev_token_with_wrong_secret_is_401(client):
    forged = jwt.encode(
        {"sub": "x", "exp": _now() + 60},
        "another-secret-of-some-length-32-bytes!",
        algorithm="HS256",
    )
    assert client.get("/api/users/me", headers=bearer(forged)).status_code == 401


def test_dev_tokens_are_refused_in_clerk_mode(clerk_client, token):
    assert clerk_client.get("/api/users/me", headers=bearer(token("dev_user"))).status_code == 401


def test_dev_token_cli_prints_a_working_token(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["auth", "dev-token", "cli_user", "--email", "c@x.io"])
    assert result.exit_code == 0, result.output
    printed = result.output.strip().splitlines()[-1]
    response = client.get("/api/users/me", headers=bearer(printed))
    assert response.status_code == 200
    assert response.get_json()["clerk_id"] == "cli_user"


# --- tokens verified lately -------------------------------------------------------------


@pytest.fixture()
def decode_calls(monkeypatch):
    """How many times PyJWT checked a signature."""
    calls = []
    real = jwt.decode

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("api.auth.jwt.decode", counting)
    return calls


def test_a_token_seen_again_is_not_verified_again(clerk_client, decode_calls):
    token = KEYS.token("user_again")
    for _ in range(3):
        assert clerk_client.get("/api/users/me", headers=bearer(token)).status_code == 200
    assert decode_calls == [token]


def _move_clocks_to(monkeypatch, moment: float) -> None:
    """Our clock and PyJWT's, both at `moment`."""

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(moment, tz)

    monkeypatch.setattr("api.auth.time.time", lambda: moment)
    monkeypatch.setattr("jwt.api_jwt.datetime", Later)


def test_a_remembered_token_still_expires(clerk_client, decode_calls, monkeypatch):
    token = KEYS.token("user_expiring", exp=_now() + 30)
    assert clerk_client.get("/api/users/me", headers=bearer(token)).status_code == 200
    assert decode_calls == [token]
    _move_clocks_to(monkeypatch, time.time() + 30 + 11)  # past exp and the 10 s leeway
    response = clerk_client.get("/api/users/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "The token has expired."
    assert len(decode_calls) > 1  # not taken from memory: verified again, and refused


def test_a_token_is_remembered_for_at_most_a_minute(clerk_client, decode_calls, monkeypatch):
    """A long-lived token is checked again after TTL_S: a key withdrawn from the JWKS
    stops working within a minute."""
    token = KEYS.token("user_long", exp=_now() + 3600)
    assert clerk_client.get("/api/users/me", headers=bearer(token)).status_code == 200
    _move_clocks_to(monkeypatch, time.time() + 61)
    assert clerk_client.get("/api/users/me", headers=bearer(token)).status_code == 200
    assert decode_calls == [token, token]


def test_a_forged_copy_of_a_remembered_token_is_refused(clerk_client):
    """Same header and claims, another key's signature: another cache key, so the
    signature is checked, and fails."""
    good = KEYS.token("user_forged")
    assert clerk_client.get("/api/users/me", headers=bearer(good)).status_code == 200
    head, body, _ = good.split(".")
    forged = ".".join([head, body, OTHER.token("user_forged").split(".")[2]])
    response = clerk_client.get("/api/users/me", headers=bearer(forged))
    assert response.status_code == 401


def test_the_memory_of_tokens_is_bounded():
    from api.auth import Identity, RecentlyVerified

    recent = RecentlyVerified()
    recent.MAX_ENTRIES = 100
    for i in range(250):
        recent.put(f"token-{i}", Identity(f"user_{i}"), time.time() + 3600)
    assert len(recent) == 100
    assert recent.get("token-0") is None  # the oldest went first
    assert recent.get("token-249") == Identity("user_249")
