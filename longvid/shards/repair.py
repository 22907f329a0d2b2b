"""End-of-run repair: every key in exactly one shard, and damaged shards set aside, never restored.

A writer killed between publishing a shard and recording it can leave a key in two shards when
its retried batch was grouped differently. :func:`drop_duplicate_keys` keeps the lowest shard
holding a key and removes the key from the others (the shard is rewritten without it, or moved
to ``quarantine/`` when nothing else is left in it). A content registry that lost its claims (its
actor was killed and restarted) can let two keys with the same bytes both be written:
:func:`drop_content_duplicates` keeps the earliest (lowest shard, then key) and drops the others the
same way. Both work from the index's ``key``/``shard``/``sha256`` columns with Arrow group-bys;
only the duplicated rows become Python objects.
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
    return _drop_from_shards(storage, losers, "duplicate_keys", "duplicate key(s)")


def content_duplicates(videos: pa.Table) -> dict[str, str]:
    """key → the key it duplicates, for every video whose sha256 an earlier video (lowest shard,
    then key) also has. ``videos`` needs ``key``, ``shard`` and ``sha256``; one row per key."""
    rows = videos.select(["key", "shard", "sha256"]).filter(pc.is_valid(videos["sha256"]))
    counts = rows.group_by("sha256").aggregate([("key", "count_distinct")])
    shared = counts.filter(pc.greater(counts["key_count_distinct"], 1))["sha256"]
    if len(shared) == 0:
        return {}
    groups: dict[str, list[tuple]] = {}
    for row in rows.filter(pc.is_in(rows["sha256"], value_set=shared)).to_pylist():  # bounded: duplicates only
        groups.setdefault(row["sha256"], []).append((_shard_order(row["shard"]), row["key"], row["shard"]))
    out: dict[str, str] = {}
    for members in groups.values():
        members.sort()
        first = members[0][1]
        out.update({key: first for _, key, _ in members[1:] if key != first})
    return out


def drop_content_duplicates(storage: Storage, videos: pa.Table) -> tuple[list[dict], dict[str, str]]:
    """Remove every video whose content an earlier one holds: (one note per shard changed,
    dropped key → the key it duplicates)."""
    duplicate_of = content_duplicates(videos)
    if not duplicate_of:
        return [], {}
    dropped = pa.array(sorted(duplicate_of), pa.string())
    pairs = videos.select(["key", "shard"]).filter(pc.is_in(videos["key"], value_set=dropped)).to_pylist()
    losers: dict[str, set[str]] = {}
    for row in pairs:
        losers.setdefault(row["shard"], set()).add(row["key"])
    return _drop_from_shards(storage, losers, "duplicate_content", "video(s) whose content an earlier one holds"), \
        duplicate_of


def _drop_from_shards(storage: Storage, losers: dict[str, set[str]], reason: str, what: str) -> list[dict]:
    """Rewrite each shard without its losers (or quarantine it when none of it is left)."""
    notes = []
    for shard, drop in sorted(losers.items()):
        remaining = _rewrite_without(storage, shard, drop)
        if remaining:
            rebuild_index_part(storage, shard)
            action = f"rewritten without {len(drop)} {what}"
        else:
            moved = quarantine(storage, shard)
            for part in part_paths(shard):
                storage.delete(part)
            action = f"held only {what}: moved to {moved}"
        _drop_layer_rows(storage, shard, drop)
        notes.append({"shard": shard, "keys": sorted(drop), "reason": f"{reason}: {action}"})
    return notes


__all__ = ["QUARANTINE_DIR", "content_duplicates", "drop_content_duplicates", "drop_duplicate_keys", "duplicate_keys",
           "quarantine", "PARTS_DIR"]
