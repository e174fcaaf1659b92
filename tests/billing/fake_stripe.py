"""A small fake of the Stripe API on 127.0.0.1, for the official `stripe` library.

It answers the calls StudioX makes (customers, Checkout Sessions, portal sessions),
keeps what it created so a later GET finds it, and records every request so tests can
assert what was sent. Tests flip a session to paid with `pay()`, as Stripe would after
the customer pays. Also signs webhook payloads exactly as Stripe does.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl


def nest(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (`a[b][0][c]=v`) back into dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node):
        if isinstance(node, dict):
            if node and all(k.isdigit() for k in node):
                return [lists(node[k]) for k in sorted(node, key=int)]
            return {k: lists(v) for k, v in node.items()}
        return node

    return lists(root)


@dataclass
class Recorded:
    method: str
    path: str
    params: dict
    headers: dict


class FakeStripe:
    def __init__(self):
        self.requests: list[Recorded] = []
        self.customers: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}
        self.idempotent: dict[str, dict] = {}
        self.fail_with: int | None = None  # answer every call with this status
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer._handle(self, "GET")

            def do_POST(self):
                outer._handle(self, "POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> FakeStripe:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.customers.clear()
            self.sessions.clear()
            self.idempotent.clear()
            self.fail_with = None

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def pay(self, session_id: str, payment_status: str = "paid") -> dict:
        """The customer finished Checkout (and, by default, the payment went through)."""
        session = self.sessions[session_id]
        session.update(status="complete", payment_status=payment_status)
        return session

    # --- the API ------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        path, _, query = handler.path.partition("?")
        params = nest(parse_qsl(body or query, keep_blank_values=True))
        with self._lock:
            self.requests.append(Recorded(method, path, params, dict(handler.headers)))
            if self.fail_with:
                status, payload = (
                    self.fail_with,
                    {"error": {"type": "api_error", "message": "fake outage"}},
                )
            else:
                key = handler.headers.get("Idempotency-Key")
                if method == "POST" and key and key in self.idempotent:
                    status, payload = 200, self.idempotent[key]
                else:
                    status, payload = self._route(method, path, params)
                    if method == "POST" and key and status == 200:
                        self.idempotent[key] = payload
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_test_{next(self._ids):06d}"

    def _route(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        if (method, path) == ("POST", "/v1/customers"):
            customer = {"id": self._id("cus"), "object": "customer", **params}
            self.customers[customer["id"]] = customer
            return 200, customer
        if (method, path) == ("POST", "/v1/checkout/sessions"):
            return 200, self._create_session(params)
        match = re.fullmatch(r"/v1/checkout/sessions/([^/]+)", path)
        if method == "GET" and match:
            session = self.sessions.get(match.group(1))
            if session is None:
                return 404, {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "resource_missing",
                        "message": f"No such checkout.session: '{match.group(1)}'",
                    }
                }
            return 200, session
        if (method, path) == ("POST", "/v1/billing_portal/sessions"):
            ident = self._id("bps")
            return 200, {
                "id": ident,
                "object": "billing_portal.session",
                "customer": params.get("customer"),
                "return_url": params.get("return_url"),
                "url": f"https://billing.stripe.test/p/session/{ident}",
            }
        return 404, {"error": {"type": "invalid_request_error", "message": f"No route {path}"}}

    def _create_session(self, params: dict) -> dict:
        ident = self._id("cs")
        items = params.get("line_items", [])
        total = sum(
            int(item.get("price_data", {}).get("unit_amount", 0)) * int(item.get("quantity", 1))
            for item in items
        )
        currency = next(
            (item["price_data"]["currency"] for item in items if "price_data" in item), "usd"
        )
        session = {
            "id": ident,
            "object": "checkout.session",
            "mode": params.get("mode"),
            "customer": params.get("customer"),
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}),
            "amount_total": total,
            "currency": currency,
            "status": "open",
            "payment_status": "unpaid",
            "payment_intent": self._id("pi") if params.get("mode") == "payment" else None,
            "subscription": None,
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "url": f"https://checkout.stripe.test/c/pay/{ident}",
            "created": int(time.time()),
        }
        self.sessions[ident] = session
        return session


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header: t=<ts>,v1=<hex hmac_sha256(secret, "<ts>.<payload>")>."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"
