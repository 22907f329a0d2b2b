"""Resume's damage check: shards that cannot be trusted are set aside, so they never block a run.

A dataset can hold a shard someone replaced, edited or linked in: an unsafe member name, a record
that is not JSON or has the wrong types, a member that is a link or a device, a shard that is a
symbolic link. :func:`set_aside_damaged_shards` moves such a shard to ``quarantine/`` (the link
itself for a link: its target is never read), drops its index rows and returns one note per shard,
so the run goes on and re-ingests the shard's sources that its manifest still lists.

Bounded, not exhaustive. Reading every tar of a 30,000-shard dataset at every resume would cost
a full read of the corpus, so only what resume must touch anyway, or what changed under it, is
read: (1) the listing itself, with sizes and link flags (S3 list pages carry sizes; locally one
``lstat`` per shard): a link is set aside without reading; (2) shards without an index part, whose
part resume must rebuild from the tar anyway: they are validated while being read; (3) shards
whose size differs from the size their part recorded, or that are newer than their part (a part
is always written after its shard is published): replaced or edited since they were indexed, so
read and validated once (tar padding often keeps a replaced shard's size). A shard edited with its
mtime preserved is not caught here; the readers' row checks (:mod:`validate`) and member checks
(:mod:`reader`) still refuse what it holds, one row at a time.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from .catalog import open_index
from .compact import update_index
from .index import PARTS_DIR, check_shard_rows, part_paths, rebuild_index_part, scan_shard
from .repair import quarantine
from .storage import Storage
from .validate import DamagedShard
from .writer import SHARD_DIR

log = logging.getLogger("longvid")


def _note(shard: str, moved: str, reason_class: str, detail: str, keys: list[str]) -> dict:
    return {"shard": shard, "moved_to": moved, "reason": f"{reason_class}: {detail} (moved to {moved})",
            "reason_class": reason_class, "keys": keys}


def _set_aside(storage: Storage, shard: str, reason_class: str, detail: str, keys: list[str]) -> dict:
    moved = quarantine(storage, shard)
    for part in part_paths(shard):
        storage.delete(part)
    log.warning("set aside damaged shard %s (%s: %s) → %s", shard, reason_class, detail, moved)
    return _note(shard, moved, reason_class, detail, keys)


def _indexed_keys(shards: pa.Table, index, shard: str) -> list[str]:
    """The keys the index holds for ``shard`` (one shard's rows: bounded), or [] when it has none."""
    if not pc.any(pc.equal(shards["shard"], shard)).as_py():
        return []
    return index.read_videos([shard], columns=["key"])["key"].to_pylist()


def set_aside_damaged_shards(storage: Storage) -> tuple[list[str], list[dict]]:
    """(shards whose index part was rebuilt, one note per shard set aside); see the module docstring.
    Leaves the shard table up to date with what remains."""
    entries = [e for e in storage.list_entries(SHARD_DIR) if e[0].endswith(".tar")]
    part_time = {path: mtime for path, _, _, mtime in storage.list_entries(PARTS_DIR)}
    update_index(storage)  # the table now names every shard that has a part (a killed run's included)
    index = open_index(storage)
    table = index.shards
    # shard → its indexed size, for shards whose rows can be read (a part on storage, or compacted)
    readable = pc.or_(pc.invert(pc.starts_with(table["videos_file"], PARTS_DIR + "/")),
                      pc.is_in(table["videos_file"], value_set=pa.array(sorted(part_time), pa.string())))
    have = table.filter(readable)
    known = dict(zip(have["shard"].to_pylist(), have["bytes"].to_pylist()))  # one pair per shard: O(shards)
    repaired: list[str] = []
    notes: list[dict] = []
    for path, size, is_link, mtime in entries:
        try:
            if is_link:  # (1) from the listing alone: the link's target is never read
                raise DamagedShard(path, "symlinked_shard", "the shard is a symbolic link")
            if path not in known:  # (2) no part: rebuilt from the tar, validated as it is read
                rebuild_index_part(storage, path)
                repaired.append(path)
            elif known[path] != size or mtime > part_time.get(part_paths(path)[0], mtime):  # (3) changed since indexed
                samples, records = scan_shard(storage, path)
                check_shard_rows(path, samples, records, size)
        except DamagedShard as exc:
            keys = _indexed_keys(have, index, path) if path in known else []
            notes.append(_set_aside(storage, path, exc.reason_class, exc.detail, keys))
    in_table = set(table["shard"].to_pylist())
    dropped_indexed = any(n["shard"] in in_table for n in notes)
    if repaired or dropped_indexed:  # rebuilt parts read, rows of shards set aside dropped
        update_index(storage, repair=dropped_indexed)
    if repaired:
        log.warning("rebuilt index parts of %d shard(s) committed by a killed run", len(repaired))
    return repaired, notes


__all__ = ["set_aside_damaged_shards"]
