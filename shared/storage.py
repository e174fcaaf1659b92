"""Where task artifacts live: a local directory by default (`STORAGE_URL=file:///path`),
or an S3-compatible bucket (`STORAGE_URL=s3://bucket/prefix`, endpoint `S3_ENDPOINT_URL`).

Keys are `<task_id>/<name>`. Workers `put` (or `put_file` for large files such as videos,
which never pass through memory whole), the API `open`s for its owner, and the retention
job `delete_task`s.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredArtifact:
    name: str
    content_type: str
    size: int
    sha256: str

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }


class Storage(Protocol):
    def put(self, task_id: str, name: str, data: bytes, content_type: str) -> StoredArtifact: ...

    def put_file(
        self, task_id: str, name: str, path: Path, content_type: str
    ) -> StoredArtifact: ...

    def open(self, task_id: str, name: str) -> BinaryIO: ...

    def delete_task(self, task_id: str) -> None: ...


def _check_name(name: str) -> None:
    # Names come from handlers, but the API passes user-supplied names to `open`:
    # nothing may escape the task's own directory/prefix.
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise FileNotFoundError(name)


def file_digest(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class LocalStorage:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, task_id: str, name: str) -> Path:
        _check_name(name)
        _check_name(str(task_id))
        return self.root / str(task_id) / name

    def put(self, task_id: str, name: str, data: bytes, content_type: str) -> StoredArtifact:
        path = self._path(task_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)  # readers never see half a file
        return StoredArtifact(name, content_type, len(data), hashlib.sha256(data).hexdigest())

    def put_file(self, task_id: str, name: str, path: Path, content_type: str) -> StoredArtifact:
        target = self._path(task_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
        size, sha = file_digest(target)
        return StoredArtifact(name, content_type, size, sha)

    def open(self, task_id: str, name: str) -> BinaryIO:
        return self._path(task_id, name).open("rb")

    def delete_task(self, task_id: str) -> None:
        _check_name(str(task_id))
        shutil.rmtree(self.root / str(task_id), ignore_errors=True)


class S3Storage:
    """Artifacts as objects `<prefix>/<task_id>/<name>` in an S3-compatible bucket."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client=None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            try:
                import boto3  # optional extra: only deployments that use S3 install it
            except ImportError:
                raise RuntimeError(
                    "STORAGE_URL is s3://... but boto3 is not installed "
                    "(pip install 'studiox[s3]')."
                ) from None
            client = boto3.client("s3", endpoint_url=endpoint_url)
        self.client = client

    def _key(self, task_id: str, name: str = "") -> str:
        if name:
            _check_name(name)
        _check_name(str(task_id))
        parts = [p for p in (self.prefix, str(task_id), name) if p]
        return "/".join(parts) + ("" if name else "/")

    def put(self, task_id: str, name: str, data: bytes, content_type: str) -> StoredArtifact:
        sha = hashlib.sha256(data).hexdigest()
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(task_id, name),
            Body=data,
            ContentType=content_type,
            Metadata={"sha256": sha},
        )
        return StoredArtifact(name, content_type, len(data), sha)

    def put_file(self, task_id: str, name: str, path: Path, content_type: str) -> StoredArtifact:
        size, sha = file_digest(Path(path))
        # upload_file streams (multipart for big files) instead of reading it into memory.
        self.client.upload_file(
            str(path),
            self.bucket,
            self._key(task_id, name),
            ExtraArgs={"ContentType": content_type, "Metadata": {"sha256": sha}},
        )
        return StoredArtifact(name, content_type, size, sha)

    def open(self, task_id: str, name: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(task_id, name))
        except Exception as exc:  # botocore's NoSuchKey is generated per client
            if type(exc).__name__ in {"NoSuchKey", "ClientError"}:
                raise FileNotFoundError(name) from exc
            raise
        return response["Body"]

    def delete_task(self, task_id: str) -> None:
        prefix = self._key(task_id)
        token = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.client.list_objects_v2(**kwargs)
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")


def make_storage(url: str, s3_endpoint_url: str | None = None) -> Storage:
    if url.startswith("file://"):
        return LocalStorage(url[len("file://") :])
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"STORAGE_URL {url!r} names no bucket (s3://bucket/prefix).")
        return S3Storage(bucket, prefix, endpoint_url=s3_endpoint_url)
    raise ValueError(f"Unsupported STORAGE_URL {url!r} (file:///path or s3://bucket/prefix).")
