"""A small load generator: asyncio keep-alive HTTP/1.1 connections on 127.0.0.1.

Run in its own process (so its CPU is not the server's) with `run_load(...)`; closed loop
(`concurrency` connections back to back) or open loop (`rate` requests per second spread
over the connections). Bounded by `duration_s`; loopback only.
(Underscored: `python -m bench` skips it.)"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import time
from urllib.parse import urlsplit


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _connection(host, port, requests, deadline, latencies, statuses, pace):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            if pace is not None:
                due = pace()
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.perf_counter() >= deadline:
                    break
            raw = next(requests)
            started = time.perf_counter()
            writer.write(raw)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[int(status_line.split()[1])] = statuses.get(int(status_line.split()[1]), 0) + 1
    finally:
        writer.close()


async def _run(url, bodies, headers_list, concurrency, duration_s, rate):
    parts = urlsplit(url)
    host, port, path = parts.hostname, parts.port, parts.path
    raws = []
    for body, headers in zip(bodies, headers_list, strict=True):
        data = json.dumps(body).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        raws.append(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{head}\r\n".encode()
            + data
        )
    requests = itertools.cycle(raws)
    latencies, statuses = [], {}
    start = time.perf_counter()
    deadline = start + duration_s
    pace = None
    if rate:
        ticket = itertools.count()
        pace = lambda: start + next(ticket) / rate  # noqa: E731  (the schedule of an open loop)
    await asyncio.gather(
        *(
            _connection(host, port, requests, deadline, latencies, statuses, pace)
            for _ in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p95_ms": _percentile(latencies, 0.95) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "statuses": statuses,
    }


def _child(queue, *args):
    queue.put(asyncio.run(_run(*args)))


def run_load(
    url: str,
    bodies: list[dict],
    headers: list[dict],
    *,
    concurrency: int,
    duration_s: float,
    rate: float | None = None,
) -> dict:
    """POST the bodies (cycled) to `url`; returns rps, p50/p95/p99 latency and statuses."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_child, args=(queue, url, bodies, headers, concurrency, duration_s, rate)
    )
    proc.start()
    result = queue.get(timeout=duration_s + 120)
    proc.join(30)
    return result
