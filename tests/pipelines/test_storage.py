"""Artifact storage: local directory and S3 (through a stand-in client), and retention."""

from __future__ import annotations

import hashlib

import pytest

from shared.storage import LocalStorage, S3Storage, make_storage


def test_local_put_open_put_file_delete(tmp_path):
    storage = make_storage(f"file://{tmp_path}")
    stored = storage.put("t1", "a.bin", b"hello", "application/octet-stream")
    assert stored.sha256 == hashlib.sha256(b"hello").hexdigest() and stored.size == 5
    source = tmp_path / "src.mp4"
    source.write_bytes(b"x" * 3_000_000)
    big = storage.put_file("t1", "video.mp4", source, "video/mp4")
    assert big.size == 3_000_000 and big.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    with storage.open("t1", "a.bin") as fh:
        assert fh.read() == b"hello"
    storage.delete_task("t1")
    with pytest.raises(FileNotFoundError):
        storage.open("t1", "a.bin")


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "", "a\\b"])
def test_names_cannot_escape_the_task_directory(tmp_path, name):
    with pytest.raises(FileNotFoundError):
        LocalStorage(tmp_path).open("t1", name)


class FakeS3:
    """The few boto3 S3 client calls S3Storage makes, kept in a dict."""

    def __init__(self):
        self.objects = {}

    def put_object(self, Bucket, Key, Body, ContentType, Metadata):
        self.objects[(Bucket, Key)] = (Body, ContentType)

    def upload_file(self, filename, bucket, key, ExtraArgs):
        with open(filename, "rb") as fh:
            self.objects[(bucket, key)] = (fh.read(), ExtraArgs["ContentType"])

    def get_object(self, Bucket, Key):
        import io

        if (Bucket, Key) not in self.objects:
            raise type("NoSuchKey", (Exception,), {})()
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)][0])}

    def list_objects_v2(self, Bucket, Prefix, **_):
        keys = [k for b, k in self.objects if b == Bucket and k.startswith(Prefix)]
        return {"Contents": [{"Key": k} for k in keys], "IsTruncated": False}

    def delete_objects(self, Bucket, Delete):
        for obj in Delete["Objects"]:
            self.objects.pop((Bucket, obj["Key"]), None)


def test_s3_keys_and_lifecycle(tmp_path):
    client = FakeS3()
    storage = S3Storage("bucket", "studiox/artifacts/", client=client)
    storage.put("t1", "poster.png", b"png", "image/png")
    (tmp_path / "v").write_bytes(b"mp4")
    storage.put_file("t1", "video.mp4", tmp_path / "v", "video/mp4")
    storage.put("t10", "keep.png", b"k", "image/png")
    assert ("bucket", "studiox/artifacts/t1/poster.png") in client.objects
    assert storage.open("t1", "video.mp4").read() == b"mp4"
    storage.delete_task("t1")  # "t1/" must not match "t10/"
    assert list(client.objects) == [("bucket", "studiox/artifacts/t10/keep.png")]
    with pytest.raises(FileNotFoundError):
        storage.open("t1", "poster.png")


def test_s3_url_without_boto3_is_a_clear_error():
    try:  # boto3 is an optional extra: without it, s3:// says how to install it
        import boto3  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"studiox\[s3\]"):
            make_storage("s3://bucket/prefix")
    else:
        pytest.skip("boto3 installed")
    with pytest.raises(ValueError):
        make_storage("ftp://x")
