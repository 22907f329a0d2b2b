"""Compaction of the index parts into batch files plus the shard table (``longvid index``, finalize).

Incremental: only parts whose shard is not in a compacted file yet are read; full batches of
``shards_per_file`` shards become one new immutable file pair, the rest stay referenced as parts.
Safe to kill: files first, the shard table last (one atomic write); files that no table names
(a killed run's leftovers) are deleted by the next run. Parts are kept (they are the write path
and what repair rebuilds from), and nothing a reader's table names is ever rewritten in place.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .catalog import (
    CLIP_ORDER,
    COMPACT_CLIPS_DIR,
    COMPACT_VIDEOS_DIR,
    LEGACY_FILES,
    SHARD_TABLE,
    VIDEO_ORDER,
    CompactConfig,
    IndexReport,
    _part_shards,
    _read_optional,
    _table,
    _write_parquet,
    read_part,
    summarise_shard,
)
from .index import CLIP_SCHEMA, PARTS_DIR, VIDEO_SCHEMA, committed_shards, conform, part_paths, rebuild_index_part
from .storage import Storage


def read_shard_table(storage: Storage) -> pa.Table | None:
    data = _read_optional(storage, SHARD_TABLE)
    return None if data is None else pq.read_table(io.BytesIO(data))


def _batch_name(shards: list[str]) -> str:
    digest = hashlib.sha256("\n".join(shards).encode()).hexdigest()[:10]
    first = shards[0].rsplit("/", 1)[-1][: -len(".tar")]
    return f"{first}+{len(shards)}-{digest}.parquet"


def _is_part(path: str) -> bool:
    return path.startswith(PARTS_DIR + "/")


def _compact_batch(storage: Storage, shards: list[str], config: CompactConfig) -> tuple[list[dict], list[str]]:
    """Merge the parts of ``shards`` into one videos and one clips file; their shard-table rows."""
    name = _batch_name(shards)
    vfile, cfile = f"{COMPACT_VIDEOS_DIR}/{name}", f"{COMPACT_CLIPS_DIR}/{name}"
    videos, clips, rows = [], [], []
    for shard in shards:
        v, c, size = read_part(storage, shard)
        videos.append(v)
        clips.append(c)
        rows.append(summarise_shard(shard, v, c, size, vfile, cfile))
    _write_parquet(storage, cfile, pa.concat_tables(clips).sort_by(CLIP_ORDER), config.row_group_rows)
    _write_parquet(storage, vfile, pa.concat_tables(videos).sort_by(VIDEO_ORDER), config.row_group_rows)
    return rows, [vfile, cfile]


def _rewrite_without(storage: Storage, table: pa.Table, gone: list[str], config: CompactConfig) -> pa.Table:
    """Compacted files holding rows of vanished shards: rewrite them (bounded: those batches only)."""
    gone_arr = pa.array(gone, pa.string())
    hit = table.filter(pc.is_in(table["shard"], gone_arr))
    keep = table.filter(pc.invert(pc.is_in(table["shard"], gone_arr)))
    for column, schema, order in (("videos_file", VIDEO_SCHEMA, VIDEO_ORDER), ("clips_file", CLIP_SCHEMA, CLIP_ORDER)):
        for old in pc.unique(hit[column]).to_pylist():
            if _is_part(old):
                continue
            remaining = keep.filter(pc.equal(keep[column], old))
            if remaining.num_rows == 0:
                continue
            rows = conform(pq.read_table(io.BytesIO(storage.read_bytes(old))), schema)
            rows = rows.filter(pc.invert(pc.is_in(rows["shard"], gone_arr))).sort_by(order)
            new = f"{old.rsplit('/', 1)[0]}/{_batch_name(remaining['shard'].to_pylist())}"
            _write_parquet(storage, new, rows, config.row_group_rows)
            values = pc.if_else(pc.equal(keep[column], old), pa.scalar(new), keep[column])
            keep = keep.set_column(keep.schema.get_field_index(column), column, values)
    return keep


def _clean(storage: Storage, table: pa.Table, report: IndexReport, legacy: bool) -> None:
    """Delete compacted files no table names (a killed run's), and with ``legacy`` the old
    consolidated ``index/{videos,clips}.parquet`` (once a shard table replaces them)."""
    named = set(pc.unique(table["videos_file"]).to_pylist()) | set(pc.unique(table["clips_file"]).to_pylist())
    for path in storage.list(COMPACT_VIDEOS_DIR) + storage.list(COMPACT_CLIPS_DIR):
        if path not in named:
            storage.delete(path)
            report.cleaned.append(path)
    for path in LEGACY_FILES if legacy else ():
        if storage.exists(path):
            storage.delete(path)
            report.cleaned.append(path)


def _repair(storage: Storage, table: pa.Table, parts: set[str], report: IndexReport,
            config: CompactConfig) -> tuple[pa.Table, set[str]]:
    """Rebuild the parts of shards that have neither a part nor compacted rows (from the tar), and
    drop shards whose tar is gone: their parts, their table rows, their rows in compacted files."""
    tars = set(committed_shards(storage))
    compacted = set(table.filter(pc.invert(pc.starts_with(table["videos_file"], PARTS_DIR + "/")))["shard"].to_pylist())
    for shard in sorted(tars - parts - compacted):
        rebuild_index_part(storage, shard)
        report.repaired.append(shard)
    parts = parts | set(report.repaired)
    gone = sorted((set(table["shard"].to_pylist()) | parts) - tars)
    for shard in gone:
        for path in part_paths(shard):
            storage.delete(path)
    report.dropped = gone
    if gone:
        table = _rewrite_without(storage, table, gone, config)
    return table, parts - set(gone)


def update_index(storage: Storage, config: CompactConfig | None = None, repair: bool = False,
                 before_table_write: Callable[[], None] | None = None, changed: Sequence[str] = ()) -> IndexReport:
    """Bring the shard table and compacted files up to date with the parts.

    ``repair`` (``longvid index``) also rebuilds missing parts from the tars and drops shards whose
    tar is gone; finalize passes ``repair=False`` and so reads only the parts added since the last
    run. ``changed``: shards rewritten in place since they were indexed (a repair dropped samples and
    rebuilt their part): their table rows and compacted rows are dropped and their new parts read, so
    the counts follow (a rewritten tar can keep its size: tars are padded to 10 KiB records).
    ``before_table_write`` is a hook for tests that kill a run at its worst moment.
    """
    config = config or CompactConfig()
    report = IndexReport()
    old = read_shard_table(storage)
    empty = _table([])
    table = empty if old is None else old.select(empty.schema.names).cast(empty.schema)
    _clean(storage, table, report, legacy=False)

    parts = set(_part_shards(storage))
    if repair:
        table, parts = _repair(storage, table, parts, report, config)
    rewritten = pa.array(sorted(set(changed) & parts), pa.string())
    stale = table.filter(pc.is_in(table["shard"], value_set=rewritten))["shard"].to_pylist()  # bounded: ``changed``
    if stale:  # read again from their rebuilt parts below, as new shards
        table = _rewrite_without(storage, table, stale, config)

    # shards waiting for a batch: new parts and table rows still pointing at their part
    in_table = set(table["shard"].to_pylist())
    new = sorted(parts - in_table)
    report.added = len(new)
    pending_mask = pc.starts_with(table["videos_file"], PARTS_DIR + "/")
    pending_rows = table.filter(pending_mask)
    settled = table.filter(pc.invert(pending_mask))
    waiting = sorted(pending_rows["shard"].to_pylist() + new)

    rows: list[dict] = []
    per_file = max(1, config.shards_per_file)
    done = 0
    while len(waiting) - done >= per_file or (config.compact_remainder and done < len(waiting)):
        batch = waiting[done : done + per_file]
        batch_rows, files = _compact_batch(storage, batch, config)
        rows.extend(batch_rows)
        report.compacted_files.extend(files)
        done += len(batch)
    rest = set(waiting[done:])
    still_pending = pending_rows.filter(pc.is_in(pending_rows["shard"], pa.array(sorted(rest), pa.string())))
    for shard in sorted(rest & set(new)):
        v, c, size = read_part(storage, shard)
        rows.append(summarise_shard(shard, v, c, size, *part_paths(shard)))

    result = pa.concat_tables([settled, still_pending, _table(rows)]).sort_by("shard")
    report.shards = result.num_rows
    if before_table_write is not None:
        before_table_write()
    changed = old is None or report.added or report.compacted_files or report.dropped
    if changed:
        _write_parquet(storage, SHARD_TABLE, result)
    if changed or repair:  # the old consolidated files go once a shard table replaces them
        _clean(storage, result, report, legacy=old is None or repair)
    return report
