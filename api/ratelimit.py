"""Rate limits: one budget per caller and one per client IP, each shared by all routes.

- Per caller (RATE_LIMIT, default 600/min): the user a bearer token names, or the API
  key. The token is verified before it counts, so nobody can spend someone else's budget
  by forging a token with their `sub`. Requests without valid credentials count
  against their IP only.
- Per client IP (RATE_LIMIT_IP, default 1200/min): every request, signed in or not.
  Behind a reverse proxy set TRUSTED_PROXY_COUNT, or every client shares the proxy's IP.

Fixed windows. Counters live in Redis when there is one (RATE_LIMIT_STORAGE_URL, else
the broker's Redis), so all API processes and containers share them, and every counter a
request touches is counted in one round trip (one Lua script). In the embedded setup they
are in memory (one API process). If Redis is unreachable, each API process counts in its
own memory until Redis answers again (tried again after 1, 2, 4 ... 32 s), with one
warning, not one per request: limits protect the service, they must not take it down,
nor go away with Redis.

Not limited: liveness/readiness probes, Prometheus scrapes, and Stripe's webhook (signed,
and a refused delivery would only delay credits). An app with TESTING=True is not limited
either: test suites send thousands of requests as one user from one address.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
from flask import Flask, current_app, g, request
from limits import RateLimitItem, parse_many

from api.auth import API_KEY_PREFIX, bearer_token, verified_identity
from api.errors import ApiError, error_response
from shared.config import Settings

log = logging.getLogger("studiox.ratelimit")

EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics", "/api/billing/webhook"})
_NO_CALLER = ""
KEY_PREFIX = "studiox:rl"
RETRY_REDIS_MAX_S = 32


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


class MemoryCounters:
    """Fixed-window counters in this process (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)
        self._next_prune = 0.0

    def hit(self, keys: list[str], expiries: list[int]) -> list[int]:
        now = time.monotonic()
        with self._lock:
            if now >= self._next_prune:  # windows end: drop their counters now and then
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
                self._next_prune = now + 60
            counts = []
            for key, expiry in zip(keys, expiries, strict=True):
                count, expires_at = self._counts.get(key, (0, now + expiry))
                self._counts[key] = (count + 1, expires_at)
                counts.append(count + 1)
            return counts


class RedisCounters:
    """Fixed-window counters in Redis: every key of a request in one round trip."""

    # INCR each key; a new key (count 1) gets its window's expiry.
    SCRIPT = """
    local counts = {}
    for i, key in ipairs(KEYS) do
        local count = redis.call('INCR', key)
        if count == 1 then redis.call('EXPIRE', key, ARGV[i]) end
        counts[i] = count
    end
    return counts
    """

    def __init__(self, url: str):
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self._script = client.register_script(self.SCRIPT)

    def hit(self, keys: list[str], expiries: list[int]) -> list[int]:
        return [int(n) for n in self._script(keys=keys, args=expiries)]


@dataclass(frozen=True)
class Breach:
    limit: RateLimitItem
    retry_after: int


class RateLimiter:
    """Counts a request against its budgets; answers which limit it broke, if any."""

    def __init__(self, caller_limit: str, ip_limit: str, storage: str):
        self.budgets = (("ip", _parse(ip_limit)), ("caller", _parse(caller_limit)))
        self.memory = MemoryCounters()
        self.redis = RedisCounters(storage) if storage.startswith("redis") else None
        self._redis_down_until = 0.0
        self._redis_failures = 0

    def check(self, ip: str, caller: str) -> Breach | None:
        now = time.time()
        limits, keys, expiries = [], [], []
        for scope, items in self.budgets:
            who = ip if scope == "ip" else caller
            if not who:
                continue  # no valid credentials: only the IP budget applies
            for item in items:
                expiry = item.get_expiry()
                window = int(now // expiry)
                limits.append((item, (window + 1) * expiry))
                keys.append(f"{KEY_PREFIX}:{scope}:{item.amount}/{expiry}:{who}:{window}")
                expiries.append(expiry)
        counts = self._hit(keys, expiries)
        for (item, window_end), count in zip(limits, counts, strict=True):
            if count > item.amount:
                return Breach(item, max(1, math.ceil(window_end - now)))
        return None

    def _hit(self, keys: list[str], expiries: list[int]) -> list[int]:
        if self.redis is None or time.monotonic() < self._redis_down_until:
            return self.memory.hit(keys, expiries)
        try:
            counts = self.redis.hit(keys, expiries)
        except redis.RedisError as exc:
            if self._redis_failures == 0:
                log.warning(
                    "rate-limit storage unreachable (%s): counting in this process's memory "
                    "until it answers again",
                    exc,
                )
            self._redis_down_until = time.monotonic() + min(
                2**self._redis_failures, RETRY_REDIS_MAX_S
            )
            self._redis_failures += 1
            return self.memory.hit(keys, expiries)
        if self._redis_failures:
            log.info("rate-limit storage is back: counting in Redis again")
            self._redis_failures = 0
        return counts


def _parse(value: str) -> list[RateLimitItem]:
    # A typo in RATE_LIMIT must stop the app at start, not fail every request.
    try:
        items = parse_many(value)
    except ValueError:
        items = []
    if not items:
        raise ValueError(f"not a rate limit: {value!r} (e.g. '600 per minute')")
    return items


def _exempt() -> bool:
    return current_app.testing or request.path in EXEMPT_PATHS or request.method == "OPTIONS"


def init_app(app: Flask) -> RateLimiter:
    settings: Settings = app.extensions["studiox"].settings
    limiter = RateLimiter(settings.rate_limit, settings.rate_limit_ip, storage_uri(settings))

    @app.before_request
    def _limit():
        if _exempt():
            return None
        breach = limiter.check(client_ip(), caller_key())
        if breach is None:
            return None
        return error_response(
            429,
            "rate_limited",
            f"Too many requests (limit: {breach.limit}); try again in {breach.retry_after} s.",
            {"limit": str(breach.limit), "retry_after": breach.retry_after},
            headers={"Retry-After": str(breach.retry_after)},
        )

    app.extensions["studiox"].extras["limiter"] = limiter
    return limiter
