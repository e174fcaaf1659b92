"""Authentication: Clerk session tokens (RS256), dev tokens (HS256), API keys.

A view decorated with `@authenticated` receives `caller: Caller`; the user is provisioned
on first use. Every failure is a 401 in the API.md shape, never a 500.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import jwt
from flask import current_app, request

from api.db import db_session, retry_transient_conflicts
from api.errors import ApiError
from shared.accounts import service as accounts
from shared.config import Settings

log = logging.getLogger("studiox.auth")

LEEWAY_S = 10
JWKS_REFRESH_MIN_INTERVAL_S = 60.0
API_KEY_PREFIX = "sx_"


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Identity:
    """Who the token says the caller is (before any database lookup)."""

    clerk_id: str
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    clerk_id: str


class JwksCache:
    """Clerk's signing keys by `kid`; an unknown kid refetches at most once a minute,
    so tokens with random key ids cannot make us hammer Clerk."""

    def __init__(self, url: str, min_interval_s: float = JWKS_REFRESH_MIN_INTERVAL_S):
        self.url = url
        self.min_interval_s = min_interval_s
        self._keys: dict[str, object] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()
        self.fetches = 0

    def key(self, kid: str | None):
        with self._lock:
            if kid in self._keys:
                return self._keys[kid]
            if time.monotonic() - self._fetched_at >= self.min_interval_s:
                self._refresh()
            return self._keys.get(kid)

    def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        self.fetches += 1
        try:
            response = httpx.get(self.url, timeout=5.0)
            response.raise_for_status()
            keys = {}
            for jwk in response.json().get("keys", []):
                if jwk.get("kty") == "RSA" and jwk.get("kid"):
                    keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="RS256").key
            self._keys = keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("could not fetch Clerk JWKS from %s: %s", self.url, exc)


class RecentlyVerified:
    """Tokens this process has verified lately, with the identity each carries.

    A client sends the same token with every request until it renews it, so a token seen
    again skips the signature check (PyJWT: a twentieth of a task submission's CPU in dev
    mode, more with RS256) but never the expiry: an entry is used until the token's
    `exp` (with the same leeway) and for at most TTL_S, so a key Clerk withdraws stops
    working within that time. Keyed by the whole token: a changed byte is another key,
    verified from scratch. Bounded: the oldest entries go first.
    """

    TTL_S = 60.0
    MAX_ENTRIES = 10_000

    def __init__(self):
        self._entries: dict[str, tuple[Identity, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Identity | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if time.time() < entry[1]:
            return entry[0]
        with self._lock:
            self._entries.pop(token, None)
        return None

    def put(self, token: str, identity: Identity, expires_at: float) -> None:
        usable_until = min(time.time() + self.TTL_S, expires_at + LEEWAY_S)
        with self._lock:
            while len(self._entries) >= self.MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[token] = (identity, usable_until)

    def __len__(self) -> int:
        return len(self._entries)


class TokenVerifier:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.mode = settings.auth_mode
        self.recent = RecentlyVerified()
        self.jwks = JwksCache(settings.clerk_jwks_url) if settings.clerk_jwks_url else None
        self.pem_key = None
        if settings.clerk_jwt_key:
            pem = settings.clerk_jwt_key.replace("\\n", "\n")
            self.pem_key = jwt.algorithms.RSAAlgorithm(
                jwt.algorithms.RSAAlgorithm.SHA256
            ).prepare_key(pem)

    def verify(self, token: str) -> Identity:
        identity = self.recent.get(token)
        if identity is None:
            claims = self._verify_dev(token) if self.mode == "dev" else self._verify_clerk(token)
            identity = _identity(claims)
            self.recent.put(token, identity, float(claims["exp"]))
        return identity

    def _verify_dev(self, token: str) -> dict:
        try:
            claims = jwt.decode(
                token,
                self.settings.dev_jwt_secret,
                algorithms=["HS256"],
                leeway=LEEWAY_S,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("The token has expired.") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(f"Invalid token: {exc}.") from None
        return claims

    def _verify_clerk(self, token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("The token is malformed.") from None
        if header.get("alg") != "RS256":
            raise unauthorized("The token must be signed with RS256.")
        key = self.pem_key
        if key is None and self.jwks is not None:
            key = self.jwks.key(header.get("kid"))
        if key is None:
            if self.pem_key is None and self.jwks is None:
                log.error("AUTH_MODE=clerk but neither CLERK_JWKS_URL nor CLERK_JWT_KEY is set")
            raise unauthorized("The token is signed by an unknown key.")
        issuer = self.settings.clerk_issuer
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                leeway=LEEWAY_S,
                issuer=issuer,
                options={"require": ["sub", "exp", "sid"] + (["iss"] if issuer else [])},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("The token is not valid yet.") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("The token was issued by someone else.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"The token lacks the {exc.claim!r} claim.") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(f"Invalid token: {exc}.") from None
        parties = self.settings.clerk_authorized_parties
        if parties and claims.get("azp") not in parties:
            raise unauthorized("The token was issued for another origin (azp).")
        return claims


def _identity(claims: dict) -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise unauthorized("The token's subject is missing or invalid.")
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    name = claims.get("name") if isinstance(claims.get("name"), str) else None
    return Identity(sub, email, name)


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise unauthorized("Sign in: send Authorization: Bearer <token>.")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token.strip()


def authenticate() -> tuple[Caller, bool, Identity | None]:
    """Verify the request's credentials: (caller, account created now, token identity).

    A token for someone without an account yet provisions one (free plan, signup grant).
    """
    token = bearer_token()
    ext = current_app.extensions["studiox"]
    session = db_session()
    if token.startswith(API_KEY_PREFIX) and ext.api_key_resolver is not None:
        return ext.api_key_resolver(session, token), False, None
    identity = verified_identity(token)
    user_id, created = accounts.provision(session, identity.clerk_id, identity.email, identity.name)
    if created:
        session.commit()  # the new account stands even if the view then fails
    return Caller(user_id, identity.clerk_id), created, identity


def verified_identity(token: str) -> Identity:
    """The token's identity. The rate limiter asks first, the view next: the verifier
    remembers the token (RecentlyVerified), so its signature is checked once."""
    return current_app.extensions["studiox"].verifier.verify(token)


def current_caller() -> Caller:
    return authenticate()[0]


def authenticated(view):
    """Pass the verified, provisioned caller to the view as `caller`."""

    @functools.wraps(view)
    @retry_transient_conflicts
    def wrapper(*args, **kwargs):
        return view(*args, caller=current_caller(), **kwargs)

    wrapper._auth_required = True
    return wrapper


def make_dev_token(
    settings: Settings,
    sub: str,
    email: str | None = None,
    name: str | None = None,
    ttl_s: int = 30 * 24 * 3600,
) -> str:
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl_s}
    if email:
        claims["email"] = email
    if name:
        claims["name"] = name
    return jwt.encode(claims, settings.dev_jwt_secret, algorithm="HS256")
