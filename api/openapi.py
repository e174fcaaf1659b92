"""The OpenAPI document, built from the routes and the marshmallow schemas they declare.

Views say what they take and return with `@document(...)`; `/openapi.json` walks the URL
map, so the spec cannot list a route the app does not serve (or miss one).
"""

from __future__ import annotations

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, jsonify

from api import schemas as common

blueprint = Blueprint("openapi", __name__)

ERROR_STATUSES = {
    400: "Malformed request",
    401: "Missing or invalid credentials",
    402: "Not enough credits",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    415: "Unsupported media type",
    422: "Invalid input (details name the fields)",
    429: "Rate limited (Retry-After)",
    503: "A dependency is unavailable",
}


def document(
    summary: str,
    *,
    tags=(),
    body=None,
    query=None,
    responses=None,
    errors=(),
    headers=(),
    description: str | None = None,
    raw_body: dict | None = None,
):
    """Attach OpenAPI metadata to a view. `responses` maps status -> schema (or None)."""

    def wrap(view):
        view._openapi = {
            "summary": summary,
            "description": description,
            "tags": list(tags),
            "body": body,
            "raw_body": raw_body,
            "query": query,
            "responses": responses or {200: None},
            "errors": tuple(errors),
            "headers": tuple(headers),
        }
        return view

    return wrap


def _path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def build_spec(app: Flask) -> dict:
    spec = APISpec(
        title="StudioX API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "AI tasks paid with credits. Errors always have the shape "
            '{"error": {"code", "message", "details"}}.'
        },
    )
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key"}
    )
    spec.components.schema("Error", schema=common.ErrorSchema)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        meta = getattr(view, "_openapi", None)
        if meta is None:
            continue
        operations = {}
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operations[method.lower()] = _operation(rule, method, view, meta)
        spec.path(path=_path(rule.rule), operations=operations)
    return spec.to_dict()


def _operation(rule, method: str, view, meta) -> dict:
    default_tag = rule.rule.split("/")[2] if rule.rule.startswith("/api/") else "service"
    op: dict = {
        "summary": meta["summary"],
        "tags": meta["tags"] or [default_tag],
        "operationId": re.sub(r"\W+", "_", f"{method.lower()} {rule.rule}").strip("_"),
    }
    if meta["description"]:
        op["description"] = meta["description"]
    params = [
        {"in": "path", "name": arg, "required": True, "schema": {"type": "string"}}
        for arg in sorted(rule.arguments)
    ]
    if meta["query"] is not None:
        params.append({"in": "query", "schema": meta["query"]})
    for header in meta["headers"]:
        # A name, or (name, schema) when the view enforces more than "a string".
        name, schema = header if isinstance(header, tuple) else (header, {"type": "string"})
        params.append({"in": "header", "name": name, "required": False, "schema": schema})
    if params:
        op["parameters"] = params
    if meta["body"] is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": meta["body"]}},
        }
    elif meta["raw_body"] is not None:
        op["requestBody"] = meta["raw_body"]
    responses = {}
    for status, schema in meta["responses"].items():
        entry = {"description": "OK" if status < 300 else "Result"}
        if isinstance(schema, dict):
            entry["content"] = schema
        elif schema is not None:
            entry["content"] = {"application/json": {"schema": schema}}
        responses[str(status)] = entry
    error_statuses = set(meta["errors"])
    if meta["body"] is not None or meta["query"] is not None:
        error_statuses.add(422)
    if getattr(view, "_auth_required", False):
        op["security"] = [{"bearer": []}]
        # Authenticating looks the caller up in the database: 503 when it is down.
        error_statuses |= {401, 503}
    if meta["body"] is not None or meta["raw_body"] is not None:
        error_statuses |= {400, 413, 415}
    error_statuses.add(429)
    for status in sorted(error_statuses):
        responses.setdefault(
            str(status),
            {
                "description": ERROR_STATUSES.get(status, "Error"),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        )
    op["responses"] = responses
    return op


@blueprint.get("/openapi.json")
def openapi_json():
    ext = current_app.extensions["studiox"]
    if ext.openapi is None:
        ext.openapi = build_spec(current_app)
    return jsonify(ext.openapi)


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>StudioX API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem}
code{background:#f4f4f4;padding:1px 4px}h2{margin-top:2rem}.op{margin:.6rem 0;padding:.5rem;border-left:3px solid #888}
.m{font-weight:bold;display:inline-block;width:4.5rem}</style></head>
<body><h1>StudioX API</h1><p>Machine-readable spec: <a href="/openapi.json">/openapi.json</a>.
Authenticate with <code>Authorization: Bearer &lt;token&gt;</code>.</p><div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(spec=>{
  const out=[];
  for(const [path,ops] of Object.entries(spec.paths)){
    for(const [m,op] of Object.entries(ops)){
      const codes=Object.keys(op.responses||{}).join(', ');
      const lock=op.security?' 🔒':'';
      out.push(`<div class="op"><span class="m">${m.toUpperCase()}</span><code>${path}</code>${lock}<br>${op.summary||''}<br><small>responses: ${codes}</small></div>`);
    }
  }
  document.getElementById('ops').innerHTML=out.join('');
});
</script></body></html>"""


@blueprint.get("/docs")
def docs():
    return DOCS_PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}
