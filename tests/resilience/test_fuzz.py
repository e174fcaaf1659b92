"""Fuzzing every documented operation with schemathesis, through the served /openapi.json.

Schemathesis generates valid and invalid requests from the spec; every answer must be a
non-5xx whose status is documented and whose body matches the documented schema. The app
has billing configured against the fake Stripe on loopback, so the billing operations do
their real work instead of answering 503 `billing_not_configured`.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from sqlalchemy import update

from api import create_app
from api.auth import make_dev_token
from shared.accounts.models import User
from shared.accounts.service import provision
from shared.credits import service as credits
from tests.billing.fake_stripe import FakeStripe

pytestmark = pytest.mark.slow

FUZZ_USER = "fuzzer"
MAX_EXAMPLES = 25  # per operation and generation mode: about a minute in all
# No shrinking phase: a failure is reported as found (fast), and it is rerun by hand.
FUZZ_PHASES = (Phase.explicit, Phase.generate)

# What "conforms" means here: no 5xx, a documented status, a documented content type,
# and a body that matches the documented schema.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_app(settings, app):
    stripe = FakeStripe().start()
    fuzz = create_app(
        settings.with_(
            stripe_secret_key="sk_test_fake",
            stripe_webhook_secret="whsec_fuzz_0123456789abcdef",
            stripe_api_base=stripe.url,
        )
    )
    fuzz.config["TESTING"] = True
    # No worker consumes here: keep the messages instead of filling the shared broker.
    fuzz.extensions["studiox"].send = lambda message: None
    yield fuzz
    fuzz.extensions["studiox"].db.dispose()
    stripe.stop()


@pytest.fixture()
def api_schema(fuzz_app, committed):
    with committed.session_scope() as session:
        # Enough credits that task creation gets past the charge and is really exercised.
        user_id, _ = provision(session, FUZZ_USER)
        credits.grant(session, user_id, 10_000, "admin_grant")
        # Room for 20 unfinished tasks (no worker runs them here) before the plan's 429.
        session.execute(update(User).where(User.id == user_id).values(plan_id="enterprise"))
    yield schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    with committed.session_scope() as session:
        assert credits.audit(session) == []


@pytest.fixture()
def fuzz_headers(fuzz_app):
    token = make_dev_token(fuzz_app.extensions["studiox"].settings, FUZZ_USER)
    return {"Authorization": f"Bearer {token}"}


def fuzz_test(
    operation, mode: GenerationMode, headers: dict, seen: dict, examples: int = MAX_EXAMPLES
):
    """A Hypothesis test that sends `max_examples` generated requests to one operation."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=FUZZ_PHASES,
    )
    def fuzz(case):
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        # FUZZ_DEBUG=1 shows what was refused: a refusal of "valid" input is a spec bug.
        if os.environ.get("FUZZ_DEBUG") and response.status_code == 422:
            print(case.body, response.text[:400])
        seen.setdefault(operation.label, Counter())[response.status_code] += 1

    return fuzz


def test_every_operation_answers_as_documented(api_schema, fuzz_headers):
    # One Hypothesis run per operation and generation mode rather than schemathesis'
    # pytest plugin: its lazy loader does not work with this pytest (9.x), and a loop
    # lets every operation's failure be reported together instead of stopping at one.
    failures, operations, seen = {}, 0, {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_test(operation, mode, fuzz_headers, seen)()
            except Unsatisfiable:
                # Negative mode has nothing to break in an operation without inputs.
                assert mode is GenerationMode.NEGATIVE
            except Exception as exc:  # the failing request and why
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:3000]
    for label, statuses in sorted(seen.items()):
        print(f"{label}: {dict(sorted(statuses.items()))}")
    assert operations >= 20, f"the spec lists only {operations} operations"
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def creation_spec(app) -> dict:
    """The served spec narrowed to `POST /api/tasks`, its body a oneOf of each task type
    with that type's documented input schema (from /api/task-types).

    The served body says only `type: string, input: object`, so the fuzzer above almost
    never names a real type and creation stops at 422; this reaches the charge, the
    insert and the task representation with inputs the catalogue says are valid.
    """
    client = app.test_client()
    doc = copy.deepcopy(client.get("/openapi.json").get_json())
    bodies = []
    for item in client.get("/api/task-types").get_json()["items"]:
        # The catalogue's schemas are self-contained (`#/definitions/...`); moved into
        # this document's components, their references must point there.
        as_component = json.dumps(item["input_schema"]).replace(
            '"#/definitions/', '"#/components/schemas/'
        )
        input_schema = json.loads(as_component)
        for name, sub in input_schema.pop("definitions", {}).items():
            doc["components"]["schemas"].setdefault(name, sub)
        bodies.append(
            {
                "type": "object",
                "required": ["type", "input"],
                "additionalProperties": False,
                "properties": {
                    "type": {"type": "string", "enum": [item["type"]]},
                    "input": input_schema,
                },
            }
        )
    operation = doc["paths"]["/api/tasks"]["post"]
    operation["requestBody"]["content"]["application/json"]["schema"] = {"oneOf": bodies}
    # A generated `Prefer: wait=60` would hold the run for a minute: leave waiting out.
    operation["parameters"] = [p for p in operation.get("parameters", []) if p["name"] != "Prefer"]
    doc["paths"] = {"/api/tasks": {"post": operation}}
    return doc


def test_task_creation_with_every_types_documented_input(fuzz_app, api_schema, fuzz_headers):
    schema = schemathesis.openapi.from_dict(creation_spec(fuzz_app))
    schema.app = fuzz_app  # send through WSGI, as from_wsgi does
    operation = next(result.ok() for result in schema.get_all_operations())
    seen: dict = {}
    fuzz_test(operation, GenerationMode.POSITIVE, fuzz_headers, seen, examples=60)()
    statuses = seen[operation.label]
    print(dict(statuses))
    assert statuses[202] > 0, "no generated input was ever accepted"


def test_idempotency_key_header_is_documented_as_enforced(fuzz_app, api_schema, fuzz_headers):
    """Regression (found by the fuzzer): the spec said any string, the API refuses an
    empty, blank or over-255-character key with 422."""
    client = fuzz_app.test_client()
    spec = client.get("/openapi.json").get_json()
    params = spec["paths"]["/api/tasks"]["post"]["parameters"]
    key = next(p for p in params if p["name"] == "Idempotency-Key")["schema"]
    assert (key["minLength"], key["maxLength"], key["pattern"]) == (1, 255, r"\S")
    body = {"type": "echo", "input": {}}
    for bad in ("", "   ", "k" * 256):
        response = client.post(
            "/api/tasks", json=body, headers={**fuzz_headers, "Idempotency-Key": bad}
        )
        assert response.status_code == 422, bad
    response = client.post(
        "/api/tasks", json=body, headers={**fuzz_headers, "Idempotency-Key": "k" * 255}
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/billing/subscribe", {"plan": "\x00\x0e"}),
        ("/api/tasks", {"type": "echo", "input": {"message": "a\x00b"}}),
        ("/api/tasks", {"type": "echo", "input": {"k\x00": 1}}),
        ("/api/billing/purchase-credits", {"pack": "credits_\x00"}),
    ],
)
def test_nul_characters_are_a_422_not_a_500(fuzz_app, api_schema, fuzz_headers, path, body):
    """Regression (found by the fuzzer): PostgreSQL cannot store NUL in text or jsonb; it
    reached the database and came back as a 500."""
    response = fuzz_app.test_client().post(path, json=body, headers=fuzz_headers)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["code"] == "validation_error"
