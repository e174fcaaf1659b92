"""gunicorn settings for the API: `gunicorn --config gunicorn.conf.py "api:create_app()"`.

Every knob can be overridden from the environment (see .env.example, "Process settings").
"""

import gc
import os
import shutil
import tempfile
from pathlib import Path


def _env(name: str, default: str) -> str:
    # An empty variable (a copied .env.example) means "use the default".
    return os.environ.get(name) or default


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours container CPU sets
    except AttributeError:  # macOS
        return os.cpu_count() or 1


bind = _env("BIND", f"{_env('HOST', '0.0.0.0')}:{_env('PORT', '3000')}")

# Threads let `Prefer: wait` requests sleep without holding a whole process. Processes
# from the CPU count, capped: each holds its own database pool, and 2 x 64 cores' worth
# of pools would exhaust PostgreSQL's connections. WEB_CONCURRENCY overrides.
worker_class = "gthread"
workers = int(_env("WEB_CONCURRENCY", str(min(2 * _cpus(), 8))))
threads = int(_env("WEB_THREADS", "4"))

timeout = int(_env("WEB_TIMEOUT", "90"))  # above the longest `Prefer: wait` (60 s)
# SIGTERM: stop accepting, let in-flight requests finish for up to this long, then exit.
graceful_timeout = int(_env("WEB_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# Recycle processes now and then so a slow leak cannot grow forever.
max_requests = 10_000
max_requests_jitter = 1_000
# The heartbeat file on tmpfs: an overlay /tmp in containers can stall it (gunicorn docs).
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# The app logs one structured line per request itself (with the request id);
# GUNICORN_ACCESS_LOG=- adds gunicorn's own access log as well.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = _env("LOG_LEVEL", "info").lower()

# Prometheus multiprocess mode: every process writes its metrics to files in one
# directory and GET /metrics (served by any one process) adds them all up. The variable
# must be set before the workers import prometheus_client, hence here, in the master.
# A directory we create is ours to remove; a given one is emptied at start, because
# files left by a previous run would be added to this run's counters.
_OWN_METRICS_DIR = "_STUDIOX_OWN_METRICS_DIR"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="studiox-metrics-")
    os.environ[_OWN_METRICS_DIR] = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def post_worker_init(worker):
    # The app's ~150k long-lived objects (modules, SQLAlchemy metadata, schemas) go to
    # the collector's permanent generation: otherwise every full collection walks them,
    # a ~75 ms pause that lands on whichever request triggers it (p99, bench/create.py).
    gc.freeze()


def child_exit(server, worker):
    # Drops the dead process's live gauges; its counters and histograms stay counted.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    own = os.environ.get(_OWN_METRICS_DIR)
    if own and own == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(own, ignore_errors=True)


# gunicorn >= 25 opens a control socket at one fixed path per user ($HOME/.gunicorn):
# a second gunicorn on the machine (tests, two checkouts) would take it over, and a
# container's user may have no writable home. Older versions ignore the name.
control_socket_disable = True
