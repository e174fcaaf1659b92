"""gunicorn settings for the API (`gunicorn --config gunicorn.conf.py "api:create_app()"`)."""

import multiprocessing
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '3000')}"
# Threads let `Prefer: wait` requests sleep without holding a whole process.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 90  # above the longest `Prefer: wait` (60 s)
graceful_timeout = 30  # SIGTERM: finish in-flight requests, then exit
keepalive = 5
accesslog = None  # the app logs one structured line per request itself
errorlog = "-"
