"""Test databases and Redis databases on the local servers, made and dropped per run."""

from __future__ import annotations

import os
import socket
import uuid

import psycopg
import redis

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def admin_dsn(dbname: str = "postgres") -> str:
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={dbname}"


def sqlalchemy_url(dbname: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def create_database(prefix: str = "studiox_test") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RedisSlot:
    """A Redis database number (1..15) held for this test run, so parallel runs on one
    machine never consume each other's Celery messages."""

    def __init__(self):
        self.client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
        self.db = None
        for n in range(1, 16):
            if self.client.set(f"studiox:test-slot:{n}", os.getpid(), nx=True, ex=3 * 3600):
                self.db = n
                break
        if self.db is None:
            raise RuntimeError("all Redis test slots (db 1..15) are taken")
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=self.db).flushdb()

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.db}"

    def release(self) -> None:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=self.db).flushdb()
        self.client.delete(f"studiox:test-slot:{self.db}")
