"""End-of-run repair: every key in exactly one shard, and damaged shards set aside, never restored.

A writer killed between publishing a shard and recording it can leave a key in two shards when
its retried batch was grouped differently. :func:`drop_duplicate_keys` keeps the lowest shard
holding a key and removes the key from the others (the shard is rewritten without it, or moved
to ``quarantine/`` when nothing else is left in it). Works from the index parts' ``key`` and
``shard`` columns with Arrow group-bys; only the duplicated rows become Python objects.
"""

from __future__ import annotations

import os
import tarfile
import uuid

import pyarrow as pa
import pyarrow.compute as pc

from .index import PARTS_DIR, part_paths, rebuild_index_part
from .layers import ANNOTATIONS_DIR, LAYER_SCHEMA
from .reader import split_member_name
from .storage import LocalStorage, Storage, local_scratch_dir
from .writer import shard_number

QUARANTINE_DIR = "quarantine"


def _shard_order(name: str) -> tuple[int, str]:
    try:
        return shard_number(name), name
    except ValueError:
        return (1 << 62), name


def duplicate_keys(videos: pa.Table) -> dict[str, list[str]]:
    """key → shards holding it, for keys in more than one shard (lowest shard first)."""
    pairs = videos.select(["key", "shard"])
    counts = pairs.group_by("key").aggregate([("shard", "count")])
    dup = counts.filter(pc.greater(counts["shard_count"], 1))["key"]
    if len(dup) == 0:
        return {}
    rows = pairs.filter(pc.is_in(pairs["key"], value_set=dup)).to_pylist()  # bounded: duplicates only
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["key"], []).append(row["shard"])
    return {k: sorted(set(v), key=_shard_order) for k, v in out.items()}


def quarantine(storage: Storage, path: str) -> str:
    """Move ``path`` under ``quarantine/`` (copy, then delete); returns the new path. A local
    symbolic link is moved as the link itself: what it points at is never read or copied."""
    target = f"{QUARANTINE_DIR}/{path}"
    if isinstance(storage, LocalStorage) and os.path.islink(storage.uri(path)):
        os.makedirs(os.path.dirname(storage.uri(target)), exist_ok=True)
        os.replace(storage.uri(path), storage.uri(target))
        return target
    local = os.path.join(local_scratch_dir(), f"{uuid.uuid4().hex}.quarantine")
    stream = storage.open_read(path)
    try:
        with open(local, "wb") as f:
            while chunk := stream.read(1 << 20):
                f.write(chunk)
    finally:
        stream.close()
    storage.put_file(local, target)
    storage.delete(path)
    return target


def _rewrite_without(storage: Storage, shard: str, drop: set[str]) -> int:
    """Rewrite ``shard`` without the samples of ``drop``; returns how many samples remain."""
    local = os.path.join(local_scratch_dir(), f"{uuid.uuid4().hex}.tar.partial")
    kept: set[str] = set()
    stream = storage.open_read(shard)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as src, tarfile.open(local, "w", format=tarfile.USTAR_FORMAT) as dst:
            for member in src:
                key, _ = split_member_name(member.name)
                if key in drop:
                    continue
                kept.add(key)
                dst.addfile(member, src.extractfile(member))
    finally:
        stream.close()
    if not kept:
        os.unlink(local)
        return 0
    storage.put_file(local, shard)  # atomic replace: readers see the old shard or the new one
    return len(kept)


def _drop_layer_rows(storage: Storage, shard: str, drop: set[str]) -> None:
    """Layer parts named after ``shard`` (captions written while ingesting) lose the dropped keys."""
    import io

    import pyarrow.parquet as pq

    base = shard.rsplit("/", 1)[-1][: -len(".tar")]
    for path in storage.list(ANNOTATIONS_DIR):
        if path.rsplit("/", 1)[-1] != f"{base}.parquet":
            continue
        table = pq.read_table(io.BytesIO(storage.read_bytes(path)))
        keep = pc.invert(pc.is_in(table["key"], value_set=pa.array(sorted(drop), pa.string())))
        buf = io.BytesIO()
        pq.write_table(table.filter(keep).cast(LAYER_SCHEMA), buf)
        storage.write_bytes(path, buf.getvalue())


def drop_duplicate_keys(storage: Storage, videos: pa.Table) -> list[dict]:
    """Remove every key from all but its lowest shard; returns one note per shard changed."""
    losers: dict[str, set[str]] = {}
    for key, shards in duplicate_keys(videos).items():
        for shard in shards[1:]:
            losers.setdefault(shard, set()).add(key)
    notes = []
    for shard, drop in sorted(losers.items()):
        remaining = _rewrite_without(storage, shard, drop)
        if remaining:
            rebuild_index_part(storage, shard)
            action = f"rewritten without {len(drop)} duplicate key(s)"
        else:
            moved = quarantine(storage, shard)
            for part in part_paths(shard):
                storage.delete(part)
            action = f"held only duplicate keys: moved to {moved}"
        _drop_layer_rows(storage, shard, drop)
        notes.append({"shard": shard, "keys": sorted(drop), "reason": f"duplicate_keys: {action}"})
    return notes


__all__ = ["QUARANTINE_DIR", "drop_duplicate_keys", "duplicate_keys", "quarantine", "PARTS_DIR"]
