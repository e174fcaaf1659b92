# syntax=docker/dockerfile:1
# One image for every role: the command picks it (see docker-compose.yml / Procfile).
#   docker build -t studiox .
#   docker run --env-file .env studiox                       # API (gunicorn, the default)
#   docker run --env-file .env studiox celery -A workers.celery_app worker -Q studiox
# No secrets are baked in: everything comes from the environment at run time.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml ./
ARG EXTRAS="s3"
RUN python - <<'PY'
import os, subprocess, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
for extra in os.environ.get("EXTRAS", "").split():  # build args are in RUN's environment
    deps += project["optional-dependencies"][extra]
subprocess.check_call([sys.executable, "-m", "pip", "install", *deps])
PY

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STUDIOX_ENV=production \
    LOG_FORMAT=json \
    PORT=3000 \
    STUDIOX_VAR_DIR=/var/lib/studiox \
    BEAT_SCHEDULE_FILE=/var/lib/studiox/beat/celerybeat-schedule
RUN groupadd --system --gid 10001 studiox \
    && useradd --system --uid 10001 --gid studiox --home-dir /app --shell /usr/sbin/nologin studiox \
    && mkdir -p /var/lib/studiox/artifacts /var/lib/studiox/beat \
    && chown -R studiox:studiox /var/lib/studiox
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY gunicorn.conf.py Procfile ./
COPY migrations ./migrations
COPY shared ./shared
COPY workers ./workers
COPY api ./api
USER studiox
EXPOSE 3000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "api:create_app()"]
