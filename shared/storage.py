"""Where task artifacts live: a local directory by default (`STORAGE_URL=file:///path`).

Keys are `<task_id>/<name>`. Workers `put`, the API `open`s for its owner, and the
retention job `delete_task`s.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class StoredArtifact:
    name: str
    content_type: str
    size: int
    sha256: str

    def as_dict(self) -> dict:
        return {"name": self.name, "content_type": self.content_type, "size": self.size,
                "sha256": self.sha256}


class Storage(Protocol):
    def put(self, task_id: str, name: str, data: bytes, content_type: str) -> StoredArtifact: ...

    def open(self, task_id: str, name: str) -> BinaryIO: ...

    def delete_task(self, task_id: str) -> None: ...


class LocalStorage:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, task_id: str, name: str) -> Path:
        if "/" in name or "\\\\" in name or name in ("", ".", ".."):
            raise FileNotFoundError(name)
        return self.root / str(task_id) / name

    def put(self, task_id: str, name: str, data: bytes, content_type: str) -> StoredArtifact:
        path = self._path(task_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)  # readers never see half a file
        return StoredArtifact(name, content_type, len(data), hashlib.sha256(data).hexdigest())

    def open(self, task_id: str, name: str) -> BinaryIO:
        return self._path(task_id, name).open("rb")

    def delete_task(self, task_id: str) -> None:
        shutil.rmtree(self.root / str(task_id), ignore_errors=True)


def make_storage(url: str) -> Storage:
    if url.startswith("file://"):
        return LocalStorage(url[len("file://") :])
    raise ValueError(f"Unsupported STORAGE_URL {url!r} (file:// is supported here).")
