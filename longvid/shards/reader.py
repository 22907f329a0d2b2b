"""Reading shards back without trusting them: member names are checked, nothing is unpickled.

``iter_shard`` streams one tar and yields ``{"__key__": key, ext: bytes, ...}`` samples, the same
shape ``webdataset`` yields; ``read_member`` fetches one member with a single ranged read.
"""

from __future__ import annotations

import json
import tarfile
from typing import BinaryIO, Iterator

from .schema import is_valid_key
from .storage import Storage


class UnsafeMemberError(ValueError):
    """A tar member whose name or type could escape or confuse the reader."""


def split_member_name(name: str) -> tuple[str, str]:
    """``KEY.ext`` → (key, ext); rejects paths, links' names and keys of the wrong shape."""
    if "/" in name or "\\" in name or name.startswith("."):
        raise UnsafeMemberError(f"unsafe tar member name {name!r}")
    key, dot, ext = name.partition(".")
    if not dot or not ext or not is_valid_key(key):
        raise UnsafeMemberError(f"unexpected tar member name {name!r}")
    return key, ext


def iter_tar_samples(stream: BinaryIO, exts: set[str] | None = None) -> Iterator[dict]:
    """Yield samples (members grouped by key, in order) from a tar stream.

    ``exts`` limits which members are read into memory (``{"json"}`` skips the media bytes).
    """
    current: dict | None = None
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isreg():
                raise UnsafeMemberError(f"tar member {member.name!r} is not a regular file")
            key, ext = split_member_name(member.name)
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key}
            if exts is None or ext in exts:
                f = tar.extractfile(member)
                current[ext] = f.read() if f is not None else b""
    if current is not None:
        yield current


def iter_shard(storage: Storage, shard: str, exts: set[str] | None = None) -> Iterator[dict]:
    stream = storage.open_read(shard)
    try:
        yield from iter_tar_samples(stream, exts)
    finally:
        stream.close()


def read_member(storage: Storage, shard: str, offset: int, size: int) -> bytes:
    return storage.read_range(shard, offset, size)


def read_record(storage: Storage, shard: str, offset: int, size: int) -> dict:
    """The video record (``KEY.json``) at a known location; JSON only."""
    return json.loads(read_member(storage, shard, offset, size))
