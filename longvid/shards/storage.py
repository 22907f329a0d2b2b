"""Where a dataset lives: a local folder or an ``s3://bucket/prefix``, behind one small interface.

Every write is atomic: a local file is written under a temporary name and renamed, an S3 object
appears when its (multipart) upload completes. Paths are relative to the dataset root and are
checked so that nothing escapes it. Credentials come from boto3's standard chain only. Small
objects can also be written conditionally (create-only, compare-and-swap on a version): the
dataset lease is built on those.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import urlsplit


def _check_relative(path: str) -> str:
    """Reject absolute paths and ``..`` so a name from a manifest or shard cannot escape the root."""
    norm = path.replace("\\", "/")
    if norm.startswith("/") or any(part in ("..", "") for part in norm.split("/")):
        raise ValueError(f"unsafe dataset path: {path!r}")
    return norm


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def s3_client():
    """A boto3 S3 client from the standard credential chain (``AWS_ENDPOINT_URL`` honoured)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "adaptive"}))


class Storage:
    """A dataset root. Subclasses: :class:`LocalStorage`, :class:`S3Storage`."""

    root: str

    @staticmethod
    def for_uri(root: str) -> "Storage":
        return S3Storage(root) if is_s3(root) else LocalStorage(root)

    def uri(self, path: str) -> str:
        return self.root.rstrip("/") + "/" + _check_relative(path)

    # -- interface -------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        raise NotImplementedError

    def open_read(self, path: str) -> BinaryIO:
        raise NotImplementedError

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        raise NotImplementedError

    def write_bytes(self, path: str, data: bytes) -> None:
        raise NotImplementedError

    def put_file(self, local_path: str, path: str) -> None:
        """Publish a finished local file at ``path`` atomically (the file is consumed)."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Relative paths of the files directly or indirectly under ``prefix``, sorted."""
        raise NotImplementedError

    def list_entries(self, prefix: str) -> list[tuple[str, int, bool, float]]:
        """(path, size in bytes, is a symbolic link, modification time) of what :meth:`list` returns,
        from the listing itself (S3's list pages carry size and LastModified; locally one ``lstat``
        each, which never follows a link)."""
        raise NotImplementedError

    def delete(self, path: str) -> None:
        raise NotImplementedError

    def size(self, path: str) -> int:
        raise NotImplementedError

    # -- conditional writes of small objects (the dataset lease) -----------------------------
    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Create ``path`` with ``data`` only if nothing is there; False when something is.

        A retried request whose first try landed also answers False: a caller that must know
        compares the object's content with what it wrote."""
        raise NotImplementedError

    def read_versioned(self, path: str) -> tuple[bytes, str] | None:
        """(bytes, version) of ``path``, or None when absent; the version changes with every write."""
        raise NotImplementedError

    def replace_if_version(self, path: str, data: bytes, version: str) -> bool:
        """Overwrite ``path`` only if it still has ``version``; False when it changed or is gone."""
        raise NotImplementedError

    def delete_if_version(self, path: str, version: str) -> bool:
        """Delete ``path`` only if it still has ``version``; False when it changed (gone: True)."""
        raise NotImplementedError


class LocalStorage(Storage):
    def __init__(self, root: str):
        if root.startswith("file://"):
            root = root[len("file://"):]
        self.root = os.path.abspath(os.path.expanduser(root))

    def _path(self, path: str) -> Path:
        return Path(self.root) / _check_relative(path)

    def uri(self, path: str) -> str:
        return str(self._path(path))

    def read_bytes(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def open_read(self, path: str) -> BinaryIO:
        return open(self._path(path), "rb")

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        with open(self._path(path), "rb") as f:
            f.seek(offset)
            return f.read(size)

    def write_bytes(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def put_file(self, local_path: str, path: str) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        shutil.move(local_path, tmp)  # same filesystem: a rename; else a copy
        os.replace(tmp, target)

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else Path(self.root)
        if not base.exists():
            return []
        out = []
        for p in base.rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                out.append(p.relative_to(self.root).as_posix())
        return sorted(out)

    def list_entries(self, prefix: str) -> list[tuple[str, int, bool, float]]:
        out = []
        for path in self.list(prefix):
            st = os.lstat(self._path(path))
            out.append((path, st.st_size, stat.S_ISLNK(st.st_mode), st.st_mtime))
        return out

    def delete(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)

    def size(self, path: str) -> int:
        return self._path(path).stat().st_size

    # Conditional writes: creation is O_CREAT|O_EXCL; every read-compare-write of one path runs
    # under an flock on a hidden sidecar (.NAME.lock), which the kernel releases when its holder
    # dies, so a kill -9 never leaves it held. The version is the content's sha256.
    @contextmanager
    def _locked(self, path: str):
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target.with_name(f".{target.name}.lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield target
        finally:
            os.close(fd)  # closing drops the flock

    def put_if_absent(self, path: str, data: bytes) -> bool:
        with self._locked(path) as target:
            try:
                fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return True

    def read_versioned(self, path: str) -> tuple[bytes, str] | None:
        with self._locked(path) as target:
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                return None
            return data, hashlib.sha256(data).hexdigest()

    def replace_if_version(self, path: str, data: bytes, version: str) -> bool:
        return self._if_version(path, version, lambda target: self.write_bytes(path, data), missing=False)

    def delete_if_version(self, path: str, version: str) -> bool:
        return self._if_version(path, version, lambda target: target.unlink(), missing=True)

    def _if_version(self, path: str, version: str, action, missing: bool) -> bool:
        """Run ``action(target)`` under the lock only if ``path`` still has content hash ``version``;
        ``missing`` is the answer when it is gone. (write_bytes: temporary name + rename, never half-written.)"""
        with self._locked(path) as target:
            try:
                current = target.read_bytes()
            except FileNotFoundError:
                return missing
            if hashlib.sha256(current).hexdigest() != version:
                return False
            action(target)
            return True


class S3Storage(Storage):
    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.bucket, self.prefix = split_s3(self.root)
        self._client = None

    def __getstate__(self):  # boto3 clients do not pickle; rebuild one per process
        return {"root": self.root, "bucket": self.bucket, "prefix": self.prefix, "_client": None}

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _key(self, path: str) -> str:
        rel = _check_relative(path)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def read_bytes(self, path: str) -> bytes:
        from .retry import read_s3_object

        return read_s3_object(self.bucket, self._key(path), self.client)

    def open_read(self, path: str) -> BinaryIO:
        from .retry import ResumingS3Reader

        return ResumingS3Reader(self.client, self.bucket, self._key(path))

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        from .retry import read_s3_object

        return read_s3_object(self.bucket, self._key(path), self.client, byte_range=(offset, size))

    def write_bytes(self, path: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)

    def put_file(self, local_path: str, path: str) -> None:
        # upload_file switches to multipart for large files; the object appears only on completion
        self.client.upload_file(local_path, self.bucket, self._key(path))
        os.unlink(local_path)

    def exists(self, path: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(path))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        return [path for path, _, _, _ in self.list_entries(prefix)]  # the same pages, names only

    def list_entries(self, prefix: str) -> list[tuple[str, int, bool, float]]:
        full = self._key(prefix) if prefix else self.prefix
        if full and not full.endswith("/"):
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            out.extend((obj["Key"][strip:], int(obj["Size"]), False, obj["LastModified"].timestamp())
                       for obj in page.get("Contents", []))
        return sorted(out)

    def delete(self, path: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(path))

    def size(self, path: str) -> int:
        return self.client.head_object(Bucket=self.bucket, Key=self._key(path))["ContentLength"]

    # Conditional writes: S3's own preconditions (If-None-Match: * creates only, If-Match: ETAG
    # swaps or deletes only that version; both answer 412 PreconditionFailed otherwise), each
    # request retried on transient errors. The version is the ETag.
    def _conditional(self, call, what: str) -> bool:
        from botocore.exceptions import ClientError

        from .retry import with_retries

        def attempt() -> bool:
            try:
                call()
                return True
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                    return False
                raise

        return with_retries(attempt, what)

    def put_if_absent(self, path: str, data: bytes) -> bool:
        key = self._key(path)
        return self._conditional(
            lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*"),
            f"create-only put of s3://{self.bucket}/{key}")

    def read_versioned(self, path: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        from .retry import with_retries

        key = self._key(path)

        def read():
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code", "") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return response["Body"].read(), response["ETag"]

        return with_retries(read, f"s3://{self.bucket}/{key}")

    def replace_if_version(self, path: str, data: bytes, version: str) -> bool:
        key = self._key(path)
        return self._conditional(
            lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfMatch=version),
            f"conditional put of s3://{self.bucket}/{key}")

    def delete_if_version(self, path: str, version: str) -> bool:
        from botocore.exceptions import ClientError

        key = self._key(path)

        def delete():
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=version)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code", "") not in ("404", "NoSuchKey", "NotFound"):
                    raise

        return self._conditional(delete, f"conditional delete of s3://{self.bucket}/{key}")


def local_scratch_dir() -> str:
    """A node-local folder for files in flight (shards being written, downloads)."""
    path = os.environ.get("LONGVID_SCRATCH") or os.path.join(tempfile.gettempdir(), "longvid-scratch")
    os.makedirs(path, exist_ok=True)
    return path


def iter_chunks(stream: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            return
        yield chunk
