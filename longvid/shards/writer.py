"""Shard writer: samples go into ``videos/shard-NNNNNN.tar`` files that appear whole or not at all.

A shard is written to node-local scratch and published with one atomic step (rename, or the end
of an S3 upload); only then is its index part written. The writer records where each member's
bytes start so a reader can fetch one video with a single ranged read.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from .schema import is_valid_key
from .storage import Storage, local_scratch_dir

SHARD_DIR = "videos"
# Extensions a media member may carry (the container of the source bytes).
MEDIA_EXTENSIONS = ("mp4", "mkv", "webm", "mov", "avi", "ts", "flv")


def shard_name(number: int) -> str:
    return f"{SHARD_DIR}/shard-{number:06d}.tar"


def shard_number(name: str) -> int:
    base = name.rsplit("/", 1)[-1]
    if not (base.startswith("shard-") and base.endswith(".tar")):
        raise ValueError(f"not a shard name: {name!r}")
    return int(base[len("shard-"):-len(".tar")])


@dataclass
class MemberLocation:
    """Where one member's bytes lie inside its shard."""

    name: str
    offset: int  # of the data, not the header
    size: int


@dataclass
class WrittenSample:
    key: str
    shard: str
    members: dict[str, MemberLocation]  # extension -> location


@dataclass
class CommittedShard:
    name: str
    bytes: int
    samples: list[WrittenSample] = field(default_factory=list)


def _round_up(n: int, block: int = tarfile.BLOCKSIZE) -> int:
    return (n + block - 1) // block * block


class ShardWriter:
    """Append samples; a shard is committed when it reaches ``max_bytes`` or ``max_samples``.

    ``next_shard_number`` hands out shard numbers; in a Ray pipeline it is a shared counter so
    parallel writers never collide. ``on_commit`` runs after each publish (index parts, progress).
    """

    def __init__(
        self,
        storage: Storage,
        next_shard_number: Callable[[], int],
        max_bytes: int = 1 << 30,
        max_samples: int = 1000,
        on_commit: Callable[[CommittedShard], None] | None = None,
    ):
        if max_bytes <= 0 or max_samples <= 0:
            raise ValueError("max_bytes and max_samples must be positive")
        self.storage = storage
        self.next_shard_number = next_shard_number
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        self.on_commit = on_commit
        self.committed: list[CommittedShard] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp_path: str | None = None
        self._current: CommittedShard | None = None

    def _open(self) -> None:
        name = shard_name(self.next_shard_number())
        self._tmp_path = os.path.join(local_scratch_dir(), f"{uuid.uuid4().hex}.tar.partial")
        self._tar = tarfile.open(self._tmp_path, "w", format=tarfile.USTAR_FORMAT)
        self._current = CommittedShard(name=name, bytes=0)

    def _add(self, member_name: str, data: bytes, mtime: float) -> MemberLocation:
        info = tarfile.TarInfo(member_name)
        info.size = len(data)
        info.mtime = int(mtime)
        info.mode = 0o444
        info.uname = info.gname = "longvid"
        self._tar.addfile(info, io.BytesIO(data))
        data_offset = self._tar.offset - _round_up(len(data))
        return MemberLocation(member_name, data_offset, len(data))

    def write(self, key: str, members: dict[str, bytes]) -> WrittenSample:
        """Add one sample: ``members`` maps extension (``json``, ``mp4``...) to bytes."""
        if not is_valid_key(key):
            raise ValueError(f"invalid sample key {key!r}")
        for ext in members:
            if not ext.replace(".", "").isalnum():
                raise ValueError(f"invalid member extension {ext!r}")
        sample_bytes = sum(len(b) for b in members.values())
        if (
            self._current is not None
            and self._current.samples
            and (
                self._current.bytes + sample_bytes > self.max_bytes
                or len(self._current.samples) >= self.max_samples
            )
        ):
            self.commit()
        if self._current is None:
            self._open()
        now = time.time()
        locations = {ext: self._add(f"{key}.{ext}", data, now) for ext, data in members.items()}
        sample = WrittenSample(key=key, shard=self._current.name, members=locations)
        self._current.samples.append(sample)
        self._current.bytes = self._tar.offset
        return sample

    def commit(self) -> CommittedShard | None:
        """Publish the open shard (if any) atomically."""
        if self._current is None:
            return None
        self._tar.close()
        shard = self._current
        shard.bytes = os.path.getsize(self._tmp_path)
        self.storage.put_file(self._tmp_path, shard.name)
        self._tar, self._tmp_path, self._current = None, None, None
        self.committed.append(shard)
        if self.on_commit is not None:
            self.on_commit(shard)
        return shard

    def abort(self) -> None:
        """Drop the open shard without publishing anything."""
        if self._tar is not None:
            self._tar.close()
        if self._tmp_path and os.path.exists(self._tmp_path):
            os.unlink(self._tmp_path)
        self._tar, self._tmp_path, self._current = None, None, None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def encode_json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
