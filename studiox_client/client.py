"""The StudioX API client, on httpx.

    from studiox_client import Client

    with Client("https://api.example.com", "sx_live_...") as client:
        task = client.tasks.run("image_analysis", {"image_url": "https://..."})
        print(task.output)

Retries: 429 and 503 answers and connection errors are retried (with jittered exponential
backoff, honouring `Retry-After`) for calls that are safe to repeat: GET, DELETE, cancel,
and task creation when it carries an idempotency key (the server then answers a repeat
with the original task, so a retry never charges twice).
"""

from __future__ import annotations

import builtins
import hashlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from studiox_client import config
from studiox_client.errors import (
    APIConnectionError,
    ConfigurationError,
    Conflict,
    StudioXError,
    TaskCanceled,
    TaskFailed,
    WaitTimeout,
    error_from_response,
    parse_retry_after,
)
from studiox_client.models import ApiKey, Credits, Task, Transaction

__version__ = "0.1.0"

RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_PREFER_WAIT_S = 60.0  # the server's cap on `Prefer: wait`

TaskRef = Task | str


def _task_id(task: TaskRef) -> str:
    return task.id if isinstance(task, Task) else str(task)


class Client:
    """A StudioX API session. `base_url` and `token` default to STUDIOX_URL and
    STUDIOX_API_KEY, then to what `studiox login` stored. `token` is an API key
    (`sx_live_...`) or a session token."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        max_retry_wait: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        headers: dict[str, str] | None = None,
    ):
        base_url, token = config.resolve(base_url, token)
        if not token:
            raise ConfigurationError(
                "No API key: pass token=, set STUDIOX_API_KEY, or run `studiox login`."
            )
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        # A server asking us to wait longer than this gets its error raised instead.
        self.max_retry_wait = max_retry_wait
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": f"studiox-python/{__version__}",
                **(headers or {}),
            },
        )
        self.tasks = Tasks(self)
        self.artifacts = Artifacts(self)
        self.api_keys = ApiKeys(self)

    # --- plumbing ------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number `attempt + 1`: exponential with "equal jitter",
        so many clients turned away at once do not all come back at once."""
        if retry_after is not None:
            # The server's figure is a floor; the jitter on top spreads the comeback.
            return retry_after + random.uniform(0, self.retry_backoff)
        ceiling = min(self.retry_backoff * 2**attempt, 30.0)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        retry: bool | None = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send one API call; raise the typed APIError for an error answer.

        `retry` defaults to whether the method is idempotent. With `stream=True` the
        caller reads and closes the (successful) response.
        """
        method = method.upper()
        if retry is None:
            retry = method in IDEMPOTENT_METHODS
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        extra = {} if timeout is None else {"timeout": httpx.Timeout(timeout, connect=10.0)}
        attempt = 0
        while True:
            request = self._http.build_request(
                method, path, json=json, params=params, headers=headers, **extra
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if retry and attempt < self.max_retries:
                    time.sleep(self._backoff(attempt, None))
                    attempt += 1
                    continue
                raise APIConnectionError(
                    f"Could not reach {self.base_url}: {exc or type(exc).__name__}"
                ) from exc
            if response.status_code < 400:
                return response
            response.read()
            if retry and response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if retry_after is None or retry_after <= self.max_retry_wait:
                    response.close()
                    time.sleep(self._backoff(attempt, retry_after))
                    attempt += 1
                    continue
            response.close()
            raise error_from_response(response)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _paginate(self, path: str, params: dict[str, Any], page_size: int) -> Iterator[dict]:
        """Every item of a cursor-paginated list, fetching pages as they are needed."""
        cursor = None
        while True:
            page = self._json("GET", path, params={**params, "limit": page_size, "cursor": cursor})
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # --- the account -----------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """The caller's profile (id, email, plan, credits...)."""
        return self._json("GET", "/api/users/me")

    def credits(self) -> Credits:
        """The caller's balance."""
        return Credits.from_json(self._json("GET", "/api/users/credits"))

    def transactions(self, *, page_size: int = 100) -> Iterator[Transaction]:
        """The caller's credit ledger, newest first, fetched page by page as you iterate."""
        for item in self._paginate("/api/users/transactions", {}, page_size):
            yield Transaction.from_json(item)

    def webhook_secret(self) -> str:
        """The `whsec_...` secret that signs your task webhooks (see `verify_webhook`)."""
        return self._json("GET", "/api/users/webhook-secret")["secret"]

    def task_types(self) -> builtins.list[dict[str, Any]]:
        """The catalogue: each type's cost, input schema and description."""
        return self._json("GET", "/api/task-types")["items"]


class Tasks:
    def __init__(self, client: Client):
        self._client = client

    def create(
        self,
        type: str,
        input: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: builtins.list[str] | None = None,
        wait: float | None = None,
    ) -> Task:
        """Submit a task (its cost is charged now). With `idempotency_key` a repeat returns
        the same task without a second charge, which is also what makes it safe to retry;
        without one, a 429/503 is raised rather than retried. `wait` (seconds, at most 60)
        lets the server hold the answer until the task ends."""
        body: dict[str, Any] = {"type": type, "input": input}
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        if webhook_events is not None:
            body["webhook_events"] = webhook_events
        headers = {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        timeout = None
        if wait:
            wait = min(float(wait), MAX_PREFER_WAIT_S)
            headers["Prefer"] = f"wait={wait:g}"
            timeout = wait + self._client.timeout
        data = self._client._json(
            "POST",
            "/api/tasks",
            json=body,
            headers=headers,
            retry=idempotency_key is not None,
            timeout=timeout,
        )
        return Task.from_json(data)

    def get(self, task: TaskRef) -> Task:
        return Task.from_json(self._client._json("GET", f"/api/tasks/{quote(_task_id(task))}"))

    def cancel(self, task: TaskRef) -> Task:
        """Cancel and refund: a queued task ends `canceled` at once; a processing one stops
        at its next step (`cancel_requested` is set; `wait` for the end). Canceling a
        canceled task returns it; a task that succeeded or failed raises Conflict."""
        task_id = _task_id(task)
        try:
            # Retrying is safe: a second cancel changes nothing (see the Conflict below).
            data = self._client._json("POST", f"/api/tasks/{quote(task_id)}/cancel", retry=True)
        except Conflict as exc:
            # Our own earlier attempt may have canceled it before its answer was lost.
            if exc.details.get("status") == "canceled":
                return self.get(task_id)
            raise
        return Task.from_json(data)

    def wait(
        self,
        task: TaskRef,
        timeout: float = 600.0,
        *,
        poll_interval: float = 0.25,
        max_poll_interval: float = 3.0,
        long_poll: float = 5.0,
        on_update: Callable[[Task], None] | None = None,
    ) -> Task:
        """Wait until the task ends and return it (whatever its status); WaitTimeout after
        `timeout` seconds. Each poll asks the server to hold the answer up to `long_poll`
        seconds (`Prefer: wait`); a server that answers at once is polled with a growing
        interval. `on_update(task)` is called with every state seen (for progress bars)."""
        current = task if isinstance(task, Task) else self.get(task)
        deadline = time.monotonic() + timeout
        interval = poll_interval
        while True:
            if on_update is not None:
                on_update(current)
            if current.ended:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(current, timeout)
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, max_poll_interval)
            hold = max(0.0, min(long_poll, deadline - time.monotonic()))
            data = self._client._json(
                "GET",
                f"/api/tasks/{quote(current.id)}",
                headers={"Prefer": f"wait={hold:.0f}"} if hold >= 1 else None,
                timeout=hold + self._client.timeout,
            )
            current = Task.from_json(data)

    def run(
        self,
        type: str,
        input: dict[str, Any],
        *,
        timeout: float = 600.0,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        on_update: Callable[[Task], None] | None = None,
    ) -> Task:
        """Create a task, wait for it, and return it once it succeeded; TaskFailed (or
        TaskCanceled) if it did not, WaitTimeout if it is still running after `timeout`.

        An idempotency key is made up if none is given, so the create can be retried
        safely (for instance while the plan's limit of tasks at once is reached).
        """
        # Short first wait when someone watches progress; otherwise let the server hold
        # the answer so that a quick task needs a single round trip.
        first_wait = min(timeout, 2.0 if on_update is not None else MAX_PREFER_WAIT_S)
        task = self.create(
            type,
            input,
            idempotency_key=idempotency_key or f"run-{uuid.uuid4()}",
            webhook_url=webhook_url,
            wait=first_wait if first_wait >= 1 else None,
        )
        task = self.wait(task, timeout, on_update=on_update)
        if task.status == "canceled":
            raise TaskCanceled(task)
        if task.status != "succeeded":
            raise TaskFailed(task)
        return task

    def list(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        page_size: int = 50,
        limit: int | None = None,
    ) -> Iterator[Task]:
        """The caller's tasks, newest first, fetched page by page as you iterate (at most
        `limit` of them if given)."""
        if limit is not None:
            page_size = max(1, min(page_size, limit))
        params = {"status": status, "type": type}
        for n, item in enumerate(self._client._paginate("/api/tasks", params, page_size)):
            if limit is not None and n >= limit:
                return
            yield Task.from_json(item)


class Artifacts:
    def __init__(self, client: Client):
        self._client = client

    def download(
        self, task: TaskRef, name: str, path: str | os.PathLike[str] | None = None
    ) -> Path:
        """Save one of a task's output files and return where it went. `path` may be a
        file name or an existing folder (default: the current folder). The file appears
        whole or not at all; with a Task that lists the file's sha256, it is checked."""
        target = Path(path) if path is not None else Path.cwd()
        if target.is_dir():
            target = target / Path(name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        expected = None
        if isinstance(task, Task) and task.artifact(name) is not None:
            expected = task.artifact(name).sha256
        url = f"/api/tasks/{quote(_task_id(task))}/artifacts/{quote(name, safe='')}"
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        response = self._client.request("GET", url, stream=True, headers={"Accept": "*/*"})
        try:
            with partial.open("wb") as fh:
                for chunk in response.iter_bytes(64 * 1024):
                    fh.write(chunk)
                    digest.update(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise APIConnectionError(f"The download of {name} broke off: {exc}") from exc
        finally:
            response.close()
        if expected and digest.hexdigest() != expected:
            partial.unlink(missing_ok=True)
            raise StudioXError(f"The download of {name} is corrupt (sha256 mismatch).")
        partial.replace(target)
        return target

    def download_all(self, task: TaskRef, folder: str | os.PathLike[str]) -> builtins.list[Path]:
        """Save every output file of the task into `folder` (created if needed)."""
        task = task if isinstance(task, Task) else self._client.tasks.get(task)
        Path(folder).mkdir(parents=True, exist_ok=True)
        return [self.download(task, a.name, folder) for a in task.artifacts]


class ApiKeys:
    """Manage API keys. Creating one needs a signed-in session token, not an API key."""

    def __init__(self, client: Client):
        self._client = client

    def create(self, name: str) -> ApiKey:
        """A new key; its secret (`.key`) is returned this once only."""
        return ApiKey.from_json(
            self._client._json("POST", "/api/users/api-keys", json={"name": name})
        )

    def list(self) -> builtins.list[ApiKey]:
        data = self._client._json("GET", "/api/users/api-keys")
        return [ApiKey.from_json(item) for item in data["items"]]

    def revoke(self, key: ApiKey | str) -> None:
        """Revoke a key (by ApiKey or id); it is refused from the next request on."""
        key_id = key.id if isinstance(key, ApiKey) else str(key)
        self._client.request("DELETE", f"/api/users/api-keys/{quote(key_id)}")
