"""Prometheus metrics at `GET /metrics`.

Two sources, one page:

- HTTP requests (count and latency by route and status) are counted in the API process
  that served them. Under gunicorn every process writes its numbers to files in
  `PROMETHEUS_MULTIPROC_DIR` (gunicorn.conf.py sets it up), and whichever process
  answers the scrape adds them all up.
- Task and credit series (tasks created / finished by type and outcome, task run time,
  credits charged / refunded, queue depth) are read from the database at scrape time.

Why the database rather than an exporter inside each worker: the `tasks` and
`credit_ledger` rows are written in the same transactions that do the work, so counts
taken from them are exact across any number of worker containers, survive restarts and
redeliveries, and need no metrics port on workers (which `--scale worker=N` without host
ports would make awkward to scrape). The price is a few aggregate queries per scrape;
they are cached for a few seconds per process and bounded by a statement timeout.
Queue depth is the number of `queued` tasks: it works with either broker, and it is what
users wait on (including tasks the sweeper has yet to re-send).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import time

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from sqlalchemy import case, func, select, text

from api.errors import error_response
from api.openapi import document
from shared.credits.models import CreditLedger
from shared.db import Database
from shared.tasks.models import PROCESSING, QUEUED, TERMINAL_STATUSES, Task

log = logging.getLogger("studiox.metrics")

blueprint = Blueprint("metrics", __name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RUN_TIME_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DB_CACHE_S = 5.0  # several Prometheus replicas scraping must not multiply the queries
DB_STATEMENT_TIMEOUT_MS = 5000

# `*_created` timestamps per label set only double the page (and are absent in
# multiprocess mode anyway).
disable_created_metrics()

# Module level: one set per process (the app factory may run several times in tests).
HTTP_REQUESTS = Counter(
    "studiox_http_requests",
    "HTTP requests served, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "studiox_http_request_duration_seconds",
    "Time to serve an HTTP request, by method, route template and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)

LOOPBACK = ("127.0.0.0/8", "::1/128")
ANYWHERE = ("0.0.0.0/0", "::/0")


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one served request (called once per request by the access-log hook)."""
    labels = (method, route, str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_LATENCY.labels(*labels).observe(seconds)


class DatabaseCollector:
    """Task and credit series computed from the tables at scrape time."""

    def __init__(self, db: Database, cache_s: float = DB_CACHE_S):
        self.db = db
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list] | None = None

    def collect(self):
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_s:
                self._cached = (now, self._read())
            families = self._cached[1]
        yield from families

    def _read(self) -> list:
        started = time.perf_counter()
        up = GaugeMetricFamily(
            "studiox_metrics_database_up", "1 if the task and credit series could be read."
        )
        try:
            with self.db.engine.connect() as conn, conn.begin():
                if conn.dialect.name == "postgresql":
                    # A slow scrape must give up, not pile up behind a busy table.
                    conn.execute(text(f"SET LOCAL statement_timeout = {DB_STATEMENT_TIMEOUT_MS}"))
                families = [
                    *_task_counts(conn),
                    _run_time_histogram(conn),
                    *_credit_totals(conn),
                ]
        except Exception as exc:  # a scrape must still answer, saying the DB part is missing
            log.warning("metrics: could not read the database: %s", str(exc).splitlines()[0])
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        took = GaugeMetricFamily(
            "studiox_metrics_database_seconds", "Time the database series took to read."
        )
        took.add_metric([], time.perf_counter() - started)
        return [*families, up, took]


tasks = Task.__table__
ledger = CreditLedger.__table__


def _task_counts(conn) -> list:
    rows = conn.execute(
        select(tasks.c.type, tasks.c.status, func.count()).group_by(tasks.c.type, tasks.c.status)
    ).all()
    created = CounterMetricFamily(
        "studiox_tasks_created", "Tasks accepted (and charged), by type.", labels=["type"]
    )
    finished = CounterMetricFamily(
        "studiox_tasks_finished",
        "Tasks that ended, by type and outcome (succeeded, failed, canceled).",
        labels=["type", "outcome"],
    )
    depth = GaugeMetricFamily("studiox_queue_depth", "Tasks waiting for a worker (status queued).")
    processing = GaugeMetricFamily(
        "studiox_tasks_processing", "Tasks a worker is running now, by type.", labels=["type"]
    )
    per_type: dict[str, int] = {}
    queued = 0
    for type_name, status, count in rows:
        per_type[type_name] = per_type.get(type_name, 0) + count
        if status in TERMINAL_STATUSES:
            finished.add_metric([type_name, status], count)
        elif status == QUEUED:
            queued += count
        elif status == PROCESSING:
            processing.add_metric([type_name], count)
    for type_name, count in sorted(per_type.items()):
        created.add_metric([type_name], count)
    depth.add_metric([], queued)
    return [created, finished, depth, processing]


def _duration_seconds(conn):
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", tasks.c.completed_at - tasks.c.started_at)
    # SQLite stores timestamps as text; julianday() reads them, in days.
    return (func.julianday(tasks.c.completed_at) - func.julianday(tasks.c.started_at)) * 86400.0


def _run_time_histogram(conn) -> HistogramMetricFamily:
    duration = _duration_seconds(conn)
    bucket_columns = [func.sum(case((duration <= bound, 1), else_=0)) for bound in RUN_TIME_BUCKETS]
    rows = conn.execute(
        select(tasks.c.type, tasks.c.status, func.count(), func.sum(duration), *bucket_columns)
        .where(
            tasks.c.status.in_(TERMINAL_STATUSES),
            tasks.c.started_at.is_not(None),
            tasks.c.completed_at.is_not(None),
        )
        .group_by(tasks.c.type, tasks.c.status)
    ).all()
    histogram = HistogramMetricFamily(
        "studiox_task_run_seconds",
        "Time from a task's first start to its end, by type and outcome.",
        labels=["type", "outcome"],
    )
    for type_name, status, count, total, *cumulative in rows:
        buckets = [
            (str(bound), int(n or 0)) for bound, n in zip(RUN_TIME_BUCKETS, cumulative, strict=True)
        ]
        buckets.append(("+Inf", int(count)))
        histogram.add_metric([type_name, status], buckets, float(total or 0.0))
    return histogram


def _credit_totals(conn) -> list:
    rows = conn.execute(
        select(tasks.c.type, ledger.c.reason, func.sum(ledger.c.delta))
        .select_from(ledger.join(tasks, tasks.c.id == ledger.c.task_id))
        .where(ledger.c.reason.in_(("task_charge", "task_refund")))
        .group_by(tasks.c.type, ledger.c.reason)
    ).all()
    charged = CounterMetricFamily(
        "studiox_credits_charged", "Credits charged for tasks, by task type.", labels=["type"]
    )
    refunded = CounterMetricFamily(
        "studiox_credits_refunded",
        "Credits refunded for failed or canceled tasks, by task type.",
        labels=["type"],
    )
    for type_name, reason, total in rows:
        if reason == "task_charge":
            charged.add_metric([type_name], -int(total or 0))
        else:
            refunded.add_metric([type_name], int(total or 0))
    return [charged, refunded]


class _Forward:
    """The process's default registry, as one collector of a per-scrape registry."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        yield from self.registry.collect()


def render(collector: DatabaseCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # every gunicorn process's numbers
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(collector)
    return generate_latest(registry)


def _networks(settings) -> list:
    if settings.metrics_allow:
        cidrs = settings.metrics_allow
    elif settings.is_production:
        cidrs = LOOPBACK
    else:
        cidrs = ANYWHERE
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def _refusal() -> Response | None:
    """None if this client may read the metrics, else the error response."""
    token = current_app.extensions["studiox"].settings.metrics_token
    if token:
        presented = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(presented, f"Bearer {token}".encode()):
            return None
    try:
        client = ipaddress.ip_address(request.remote_addr or "")
        if client.version == 6 and client.ipv4_mapped:
            client = client.ipv4_mapped
    except ValueError:
        client = None
    networks = current_app.extensions["studiox"].extras["metrics_networks"]
    if client is not None and any(client in net for net in networks):
        return None
    if token:
        return error_response(
            401,
            "unauthorized",
            "Send the metrics token: Authorization: Bearer <METRICS_TOKEN>.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return error_response(403, "forbidden", "Metrics are not served to this address.")


@blueprint.get("/metrics")
@document(
    "Prometheus metrics (text exposition format).",
    description="HTTP request count and latency by route and status; tasks created and "
    "finished by type and outcome; task run time; credits charged and refunded; queue "
    "depth. Open in development; in production only loopback clients, the CIDRs in "
    "METRICS_ALLOW, or `Authorization: Bearer <METRICS_TOKEN>`.",
    tags=["service"],
    responses={200: {"text/plain": {"schema": {"type": "string"}}}},
    errors=(401, 403),
)
def metrics():
    refusal = _refusal()
    if refusal is not None:
        return refusal
    collector = current_app.extensions["studiox"].extras["metrics_collector"]
    return Response(render(collector), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    ext = app.extensions["studiox"]
    ext.extras["metrics_collector"] = DatabaseCollector(ext.db)
    # Parsed once, so a bad METRICS_ALLOW stops the app at start, not at the first scrape.
    ext.extras["metrics_networks"] = _networks(ext.settings)
    app.register_blueprint(blueprint)
