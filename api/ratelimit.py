"""Rate limits (flask-limiter): one budget per caller and one per client IP, each shared
by all routes.

- Per caller (RATE_LIMIT, default 600/min): the user a bearer token names, or the API
  key. The token is verified before it counts, so nobody can spend someone else's budget
  by forging a token with their `sub`. Requests without valid credentials count
  against their IP only.
- Per client IP (RATE_LIMIT_IP, default 1200/min): every request, signed in or not.
  Behind a reverse proxy set TRUSTED_PROXY_COUNT, or every client shares the proxy's IP.

Counters live in Redis when there is one (RATE_LIMIT_STORAGE_URL, else the broker's
Redis), so all API processes and containers share them; in the embedded setup they are
in memory (one API process). If Redis is unreachable, each API process counts in its
own memory until Redis answers again (flask-limiter re-checks after 1, 2, 4 ... 32 s),
with one warning, not a traceback per request: limits protect the service, they must not
take it down, nor go away with Redis.

Not limited: liveness/readiness probes, Prometheus scrapes, and Stripe's webhook (signed,
and a refused delivery would only delay credits). An app with TESTING=True is not limited
either: test suites send thousands of requests as one user from one address.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from flask import Flask, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded, RequestLimit
from limits import parse_many

from api.auth import API_KEY_PREFIX, bearer_token, verified_identity
from api.errors import ApiError, error_response
from shared.config import Settings

log = logging.getLogger("studiox.ratelimit")

EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics", "/api/billing/webhook"})
_NO_CALLER = ""


def storage_uri(settings: Settings) -> str:
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return "memory://"


def client_ip() -> str:
    return request.remote_addr or "unknown"


def caller_key() -> str:
    """`user:<sub>` for a valid token, `key:<hash>` for an API key, "" for no caller."""
    key = g.get("_rate_limit_caller")
    if key is None:
        key = g._rate_limit_caller = _identify_caller()
    return key


def _identify_caller() -> str:
    try:
        token = bearer_token()
    except ApiError:
        return _NO_CALLER
    if token.startswith(API_KEY_PREFIX):
        # Keyed by the key itself: resolving it to its user would cost a query per request.
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    try:
        identity = verified_identity(token)
    except ApiError:
        return _NO_CALLER  # the view answers 401; the IP budget still applies
    return "user:" + identity.clerk_id


def _exempt() -> bool:
    return current_app.testing or request.path in EXEMPT_PATHS or request.method == "OPTIONS"


def _breach(limit: RequestLimit):
    retry_after = max(1, math.ceil(limit.reset_at - time.time()))
    return error_response(
        429,
        "rate_limited",
        f"Too many requests (limit: {limit.limit}); try again in {retry_after} s.",
        {"limit": str(limit.limit), "retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def init_app(app: Flask) -> Limiter:
    settings: Settings = app.extensions["studiox"].settings
    # A typo in RATE_LIMIT must stop the app at start, not fail every request.
    for value in (settings.rate_limit, settings.rate_limit_ip):
        if not parse_many(value):
            raise ValueError(f"not a rate limit: {value!r} (e.g. '600 per minute')")
    uri = storage_uri(settings)
    options = {"socket_connect_timeout": 1, "socket_timeout": 1} if uri.startswith("redis") else {}
    limiter = Limiter(
        key_func=client_ip,
        application_limits=[
            ApplicationLimit(settings.rate_limit_ip, key_function=client_ip, scope="ip"),
            ApplicationLimit(
                settings.rate_limit,
                key_function=caller_key,
                scope="caller",
                exempt_when=lambda: caller_key() == _NO_CALLER,
            ),
        ],
        storage_uri=uri,
        storage_options=options,
        strategy="fixed-window",
        key_prefix="studiox",
        swallow_errors=True,
        in_memory_fallback_enabled=uri != "memory://",
        on_breach=_breach,
        headers_enabled=False,  # would cost a storage round trip on every response
    )
    limiter.request_filter(_exempt)
    limiter.init_app(app)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        # More specific than the generic HTTPException handler, which would drop the
        # Retry-After that `_breach` put on the response.
        if exc.response is not None:
            return exc.response
        return error_response(
            429, "rate_limited", "Too many requests.", None, {"Retry-After": "60"}
        )

    app.extensions["studiox"].extras["limiter"] = limiter
    return limiter
