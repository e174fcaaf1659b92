"""What the API returns, as typed, read-only objects. `raw` keeps the JSON as received,
so fields the server adds later are never lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class TaskError:
    code: str
    message: str


@dataclass(frozen=True)
class Artifact:
    name: str
    content_type: str
    size: int
    url: str
    sha256: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            data["name"],
            data.get("content_type", "application/octet-stream"),
            int(data.get("size") or 0),
            data.get("url", ""),
            data.get("sha256"),
        )


@dataclass(frozen=True)
class Task:
    id: str
    type: str
    status: str
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: TaskError | None
    progress: float
    cost: int
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    artifacts: list[Artifact]
    cancel_requested: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        error = data.get("error")
        return cls(
            id=data["id"],
            type=data["type"],
            status=data["status"],
            input=data.get("input") or {},
            output=data.get("output"),
            error=TaskError(error.get("code", ""), error.get("message", "")) if error else None,
            progress=float(data.get("progress") or 0.0),
            cost=int(data.get("cost") or 0),
            created_at=parse_time(data.get("created_at")),
            started_at=parse_time(data.get("started_at")),
            completed_at=parse_time(data.get("completed_at")),
            artifacts=[Artifact.from_json(a) for a in data.get("artifacts") or []],
            cancel_requested=bool(data.get("cancel_requested")),
            raw=data,
        )

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def artifact(self, name: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.name == name), None)


@dataclass(frozen=True)
class Credits:
    total: int
    plan_credits: int
    purchased_credits: int
    plan: str
    monthly_credits: int
    next_reset_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Credits:
        return cls(
            int(data["total"]),
            int(data["plan_credits"]),
            int(data["purchased_credits"]),
            data.get("plan", ""),
            int(data.get("monthly_credits") or 0),
            parse_time(data.get("next_reset_at")),
            raw=data,
        )


@dataclass(frozen=True)
class Transaction:
    """One credit-ledger entry: `delta` is signed, `balance_after` is the total after it."""

    id: int
    delta: int
    bucket: str
    reason: str
    task_id: str | None
    balance_after: int
    created_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transaction:
        return cls(
            int(data["id"]),
            int(data["delta"]),
            data["bucket"],
            data["reason"],
            data.get("task_id"),
            int(data["balance_after"]),
            parse_time(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: datetime | None
    last_used_at: datetime | None = None
    key: str | None = None  # the secret: only in the answer to create
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiKey:
        return cls(
            data["id"],
            data["name"],
            data["prefix"],
            parse_time(data.get("created_at")),
            parse_time(data.get("last_used_at")),
            data.get("key"),
            raw=data,
        )
