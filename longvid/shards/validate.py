"""Row checks for what readers take from the index and the layers: one place, vectorised, bounded.

Every reader (the training stream's group reader, annotate's planning, export, stats) gets rows it
did not write and must not trust: a hand-edited part, schema drift, a hostile dataset. The checks
here turn a bounded table (one group's, one file's, one shard's rows) into a *reason* per row
(null where the row is fine), computed with ``pyarrow.compute`` only, so a reader can skip exactly
the bad rows, count them by reason and name the first, and never allocate from a value in a row
(an ``offset``/``size`` past the tar, 10^12 frames). Checks apply to the columns present, so a
reader that projects a few columns validates those. Nothing here reads storage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger("longvid")


class DamagedShard(ValueError):
    """A shard that cannot be trusted: ``reason_class`` is stable (summaries group by it), ``detail`` says what."""

    def __init__(self, shard: str, reason_class: str, detail: str):
        super().__init__(f"{reason_class}: {shard}: {detail}")
        self.shard, self.reason_class, self.detail = shard, reason_class, detail


@dataclass(frozen=True)
class RowLimits:
    """What a plausible row looks like; beyond these a value is hostile or corrupt, not a video."""

    max_duration_s: float = 30 * 86400.0  # 30 days: longer than any real recording, far below a bogus 10^12
    max_fps: float = 1000.0  # high-speed cameras reach ~1000 fps; containers claiming more are broken
    max_frames: int = 1 << 31  # ~2.1e9 frames (2.7 years at 25 fps): a frame count past it allocates nothing
    max_side: int = 1 << 15  # 32768 px: beyond every codec level; a bigger width is a corrupt header


LIMITS = RowLimits()


_INT_TEXT = r"^\s*[+-]?\d{1,18}\s*$"
_FLOAT_TEXT = r"^\s*([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan|infinity))\s*$"


def _first_array(values) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _finite(array) -> pa.ChunkedArray:
    return pc.is_finite(pc.cast(array, pa.float64()))


def _within(array, lo, hi) -> pa.ChunkedArray:
    return pc.and_(pc.greater_equal(array, lo), pc.less_equal(array, hi))


def _first_reason(table: pa.Table, checks: list[tuple[str, object]]) -> pa.Array:
    """One string per row: the name of the first failed check, or null; a null value fails."""
    reasons = pa.nulls(table.num_rows, pa.string())
    for name, ok in reversed(checks):  # reversed: the earliest failing check wins
        bad = pc.invert(pc.fill_null(ok, False))
        reasons = pc.if_else(bad, pa.scalar(name, pa.string()), reasons)
    return reasons.combine_chunks() if isinstance(reasons, pa.ChunkedArray) else reasons


def video_row_reasons(videos: pa.Table, shard_bytes: pa.Table | None = None,
                      limits: RowLimits = LIMITS) -> pa.Array:
    """Why each video row is unusable (null: fine). ``shard_bytes`` (columns ``shard``, ``bytes``:
    the shard table's) bounds the media and record byte ranges by the tar's size."""
    cols = set(videos.column_names)
    checks: list[tuple[str, object]] = []
    if "key" in cols:
        checks.append(("bad_key", pc.greater(pc.utf8_length(videos["key"]), 0)))
    if "duration" in cols:
        checks.append(("bad_duration", pc.and_(_finite(videos["duration"]),
                                               _within(videos["duration"], 0.0, limits.max_duration_s))))
    if "fps" in cols:
        checks.append(("bad_fps", pc.and_(_finite(videos["fps"]), _within(videos["fps"], 1e-3, limits.max_fps))))
    if "num_frames" in cols:
        checks.append(("bad_num_frames", _within(videos["num_frames"], 0, limits.max_frames)))
    for side in ("width", "height"):
        if side in cols:
            checks.append((f"bad_{side}", _within(videos[side], 1, limits.max_side)))
    size = None
    if shard_bytes is not None and "shard" in cols:
        position = pc.index_in(videos["shard"], value_set=shard_bytes["shard"].combine_chunks()
                               if isinstance(shard_bytes["shard"], pa.ChunkedArray) else shard_bytes["shard"])
        size = pc.take(shard_bytes["bytes"], position)  # null for a shard the table does not know: fails
    for prefix, reason in (("media", "media_outside_shard"), ("json", "record_outside_shard")):
        offset, length = f"{prefix}_offset", f"{prefix}_size"
        if offset in cols and length in cols:
            ok = pc.and_(pc.greater_equal(videos[offset], 0), pc.greater(videos[length], 0))
            if size is not None:
                end = pc.add_checked(pc.cast(videos[offset], pa.int64()), pc.cast(videos[length], pa.int64()))
                # a recorded size of 0 is a stub (synthetic index for benchmarks): no bound to check
                ok = pc.and_(ok, pc.or_(pc.less_equal(size, 0), pc.less_equal(end, size)))
            checks.append((reason, ok))
    return _first_reason(videos, checks)


def clip_row_reasons(clips: pa.Table, limits: RowLimits = LIMITS) -> pa.Array:
    """Why each clip row is unusable (null: fine): times finite with 0 <= start <= end, frames in order."""
    cols = set(clips.column_names)
    checks: list[tuple[str, object]] = []
    if "clip_id" in cols:
        checks.append(("bad_clip_id", pc.greater(pc.utf8_length(clips["clip_id"]), 0)))
    if "start" in cols and "end" in cols:
        ok = pc.and_(pc.and_(_finite(clips["start"]), _finite(clips["end"])),
                     pc.and_(pc.greater_equal(clips["start"], 0.0), pc.less_equal(clips["start"], clips["end"])))
        checks.append(("bad_times", pc.and_(ok, pc.less_equal(clips["end"], limits.max_duration_s))))
    if "duration" in cols:
        checks.append(("bad_duration", pc.and_(_finite(clips["duration"]),
                                               _within(clips["duration"], 0.0, limits.max_duration_s))))
    if "start_frame" in cols and "end_frame" in cols:
        ok = pc.and_(pc.greater_equal(clips["start_frame"], 0), pc.less_equal(clips["start_frame"], clips["end_frame"]))
        checks.append(("bad_frames", pc.and_(ok, pc.less_equal(clips["end_frame"], limits.max_frames))))
    return _first_reason(clips, checks)


LAYER_VALUE_TYPES = ("text", "json")


def layer_row_reasons(rows: pa.Table, limits: RowLimits = LIMITS) -> pa.Array:
    """Why each annotation layer row is unusable (null: fine): a key, a value of a known type, and
    where a span is given, finite times with 0 <= start <= end."""
    cols = set(rows.column_names)
    checks: list[tuple[str, object]] = []
    if "key" in cols:
        checks.append(("bad_key", pc.greater(pc.utf8_length(rows["key"]), 0)))
    if "value" in cols:
        checks.append(("bad_value", pc.is_valid(rows["value"])))
    if "value_type" in cols:
        checks.append(("bad_value_type", pc.is_in(rows["value_type"], value_set=pa.array(LAYER_VALUE_TYPES))))
    if "start" in cols and "end" in cols:
        spanless = pc.and_(pc.is_null(rows["start"]), pc.is_null(rows["end"]))
        ok = pc.and_(pc.and_(_finite(rows["start"]), _finite(rows["end"])),
                     pc.and_(pc.greater_equal(rows["start"], 0.0), pc.less_equal(rows["start"], rows["end"])))
        checks.append(("bad_span", pc.or_(spanless, pc.fill_null(ok, False))))
    return _first_reason(rows, checks)


def conform_rows(table: pa.Table, schema: pa.Schema) -> tuple[pa.Table, pa.Array]:
    """``table`` in ``schema`` whatever its stored types (schema drift, a hostile part), and a reason
    per row: a column that will not cast is nulled and every row of this table is marked
    ``wrong_type:<column>``; a missing column is null (the row checks decide whether that matters)."""
    columns, reasons = [], pa.nulls(table.num_rows, pa.string())
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table[f.name]
        if column.type == f.type:
            columns.append(column)
            continue
        unparsable = None
        if pa.types.is_string(column.type) and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)):
            # numbers stored as text (a CSV-fed writer): parse those that are numbers, row by row
            pattern = _INT_TEXT if pa.types.is_integer(f.type) else _FLOAT_TEXT
            unparsable = pc.invert(pc.fill_null(pc.match_substring_regex(column, pattern), True))
            column = pc.if_else(unparsable, pa.scalar(None, column.type), pc.utf8_trim_whitespace(column))
        try:
            columns.append(pc.cast(column, f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            columns.append(pa.nulls(table.num_rows, f.type))
            unparsable = pa.array([True] * table.num_rows)
        if unparsable is not None:
            reasons = pc.if_else(pc.and_(pc.is_null(reasons), unparsable), pa.scalar(f"wrong_type:{f.name}"), reasons)
    return pa.Table.from_arrays(columns, schema=schema), _first_array(reasons)


def merge_reasons(first: pa.Array, second: pa.Array) -> pa.Array:
    """Per row: the first array's reason, else the second's."""
    return pc.coalesce(first, second)


def split_rows(table: pa.Table, reasons: pa.Array) -> tuple[pa.Table, pa.Table]:
    """(the good rows, the bad rows with a ``reason`` column)."""
    bad = pc.is_valid(reasons)
    good = table.filter(pc.invert(bad))
    rejected = table.filter(bad).append_column("reason", pc.filter(reasons, bad))
    return good, rejected


def reason_counts(rejected: pa.Table) -> dict[str, int]:
    """reason → rows (Arrow value counts; a handful of reasons)."""
    if rejected.num_rows == 0:
        return {}
    counts = pc.value_counts(rejected["reason"])
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def warn_rejected(what: str, rejected: pa.Table, id_column: str) -> None:
    """One warning per call naming the first bad row of each reason (bounded: a few reasons)."""
    for reason, count in reason_counts(rejected).items():
        first = rejected.filter(pc.equal(rejected["reason"], reason)).slice(0, 1).to_pylist()[0]
        where = f" in {first['shard']}" if "shard" in first else ""
        log.warning("skipped %d %s row(s) (%s), e.g. %s %r%s", count, what, reason, id_column,
                    first.get(id_column), where)


BAD_ROW = "bad_row"  # column naming why a row is unusable (null: fine) for readers that fail it downstream


def mark_bad_video_rows(videos: pa.Table, shards: pa.Table) -> pa.Table:
    """``videos`` plus a ``bad_row`` reason column, for a pipeline that turns a bad row into a
    ledger failure where it would have read it; ``shards`` is the shard table (byte sizes)."""
    reasons = video_row_reasons(videos, shards.select(["shard", "bytes"]))
    if reasons.null_count < len(reasons):
        warn_rejected("video", videos.append_column("reason", reasons).filter(pc.is_valid(reasons)), "key")
    return videos.append_column(BAD_ROW, reasons)


def valid_layer_rows(table: pa.Table, layer: str) -> pa.Table:
    """A layer part's rows in ``LAYER_SCHEMA`` without the hostile ones (named in a warning)."""
    from .layers import LAYER_SCHEMA

    table, wrong_type = conform_rows(table, LAYER_SCHEMA)
    good, rejected = split_rows(table, merge_reasons(wrong_type, layer_row_reasons(table)))
    if rejected.num_rows:
        warn_rejected(f"layer {layer}", rejected, "key")
    return good


__all__ = ["BAD_ROW", "DamagedShard", "LIMITS", "mark_bad_video_rows", "RowLimits", "clip_row_reasons", "conform_rows", "layer_row_reasons", "merge_reasons", "reason_counts", "split_rows", "valid_layer_rows",
           "video_row_reasons", "warn_rejected"]
