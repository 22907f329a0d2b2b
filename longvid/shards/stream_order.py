"""The training stream's order, planned at shard level: per source and epoch a seeded shard
permutation cut into groups; a group's index rows (and annotation rows) are read only when the
walk reaches it, filtered, and permuted; the next group is prefetched in a background thread.

Never holds more than the shard table and a few groups per source; never reads the whole index.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .conversation import Annotations, clip_turns, parse_layer_refs, video_turns
from .index import CLIP_SCHEMA, VIDEO_SCHEMA
from .layers import layer_dir, layer_parts
from .sampling import BUCKET_LABELS, num_sampled_frames
from .storage import Storage
from .semantic_columns import check_semantic, columns_for as semantic_columns, read_semantic, with_clip_columns, \
    with_video_columns
from .validate import (clip_row_reasons, reason_counts, split_rows, valid_layer_rows, video_row_reasons,
                       warn_rejected)
from .where import Where, check_columns

log = logging.getLogger("longvid.stream")

MIX_BLOCK = 4096  # mixing draws come from one RNG per block of global indices, so any index is reachable
GROUPS_CACHED = 3  # groups kept per source: the current one, the prefetched next one, one behind
MAX_PARTS_PER_SHARD = 10_000  # annotate's part numbers are 4 digits
UNIT_COLUMNS = ["id", "key", "shard", "media_offset", "media_size", "fps", "start_frame", "end_frame",
                "start", "end", "duration", "bucket"]
_SHARD_PART = re.compile(r"-\d{4}\.parquet$")


@dataclass
class Cursor:
    """Where the global order stands: the next global draw index, and per source the next unit as
    ``[epoch, group, offset among the group's kept units]``. Rank-independent."""

    index: int = 0
    sources: list[list[int]] = field(default_factory=list)

    def copy(self) -> "Cursor":
        return Cursor(self.index, [list(s) for s in self.sources])

    def to_dict(self) -> dict:
        return {"index": self.index, "sources": [list(s) for s in self.sources]}

    @classmethod
    def from_dict(cls, value: dict) -> "Cursor":
        return cls(int(value["index"]), [[int(x) for x in s] for s in value["sources"]])


@dataclass
class Group:
    """The kept units of one shard group in one epoch, already in their epoch order."""

    table: pa.Table  # UNIT_COLUMNS, one row per kept unit, permuted
    annotations: Annotations | None  # the layer rows of the group's shards, when layers are asked for
    rows_read: int  # index rows materialised to build it (the memory test counts these)
    dropped: dict[str, int]  # units removed by the read-time filters, by reason


@dataclass
class UnitFilters:
    """Per-unit filters applied when a group is read; each is a pure function of the unit's rows."""

    frames_lo: int
    frames_hi: int
    layers: list[str]
    where: Where | None
    semantic_layer: str = ""  # LAYER/VERSION whose dedup-semantic columns join the rows (semantic_columns)


def _read_if_exists(storage: Storage, path: str) -> bytes | None:
    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # botocore's ClientError (NoSuchKey): one request either way
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def planned_counts(shards: pa.Table, unit: str, buckets: list[str]) -> np.ndarray:
    """Units per shard from the shard table (before per-unit filters): what planning may rely on."""
    if not buckets:
        return shards["ok_videos" if unit == "video" else "ok_clips"].to_numpy(zero_copy_only=False).astype(np.int64)
    column = shards["video_buckets" if unit == "video" else "clip_buckets"]
    wanted = [BUCKET_LABELS.index(b) for b in buckets]
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).reshape(len(shards), len(BUCKET_LABELS))
    return flat[:, wanted].sum(axis=1).astype(np.int64)


class SourcePlan:
    """One source's shards, groups and units, read group by group; see the module docstring."""

    def __init__(self, number: int, spec, unit: str, index, filters: UnitFilters, seed: int, shard_group: int,
                 epochs: int):
        self.number, self.spec, self.unit, self.index = number, spec, unit, index
        self.filters, self.seed, self.shard_group, self.epochs = filters, seed, shard_group, epochs
        shards = index.shards
        counts = planned_counts(shards, unit, list(spec.buckets))
        keep = np.flatnonzero(counts > 0)
        self.shards = np.asarray(shards["shard"].to_numpy(zero_copy_only=False), dtype=object)[keep]
        self.planned = int(counts[keep].sum())
        self.groups = -(-len(self.shards) // shard_group)
        digest = hashlib.sha1()
        for name, count in zip(self.shards, counts[keep]):
            digest.update(f"{name}\t{count}\n".encode())
        self.digest = digest.hexdigest()[:16]
        if filters.where is not None:
            names = list((VIDEO_SCHEMA if unit == "video" else CLIP_SCHEMA).names)
            if filters.semantic_layer:
                check_semantic(index.storage, filters.semantic_layer)
                names += semantic_columns(unit)
            check_columns(filters.where, names, f"{unit} index of {spec.dataset}"
                          + ("" if filters.semantic_layer else " (semantic_* columns need a source's semantic_layer)"))
        self.refs = parse_layer_refs(filters.layers)
        self.rows_read = 0  # index rows materialised in this process (memory bound: a few groups)
        self.dropped: dict[str, int] = {}
        self._kept: dict[tuple[int, int], int] = {}
        self._groups: OrderedDict[tuple[int, int], Group] = OrderedDict()
        self._prefetch: dict[tuple[int, int], Future] = {}
        self._perms: dict[int, np.ndarray] = {}
        self._pool: tuple[int, ThreadPoolExecutor] | None = None
        self._lock = threading.Lock()
        self._layer_checked: set[tuple[str, str]] = set()
        self.prefetching = True  # off while a stream opens: no thread runs before a dataloader forks

    def __len__(self) -> int:
        return self.planned

    # -- planning ----------------------------------------------------------------------------
    def group_shards(self, epoch: int, group: int) -> list[str]:
        if epoch not in self._perms:
            rng = np.random.default_rng([self.seed, self.number, epoch])
            self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
            self._perms[epoch] = rng.permutation(len(self.shards))
        members = self._perms[epoch][group * self.shard_group : (group + 1) * self.shard_group]
        return sorted(self.shards[members].tolist())

    def kept(self, epoch: int, group: int) -> int:
        """Units the group keeps after filters (reads the group the first time in this process)."""
        if (epoch, group) not in self._kept:
            self.group(epoch, group)
        return self._kept[(epoch, group)]

    def group(self, epoch: int, group: int) -> Group:
        key = (epoch, group)
        if key in self._groups:
            self._groups.move_to_end(key)
            return self._groups[key]
        future = self._prefetch.pop(key, None)
        built = future.result() if future is not None else self._build(epoch, group, self.group_shards(epoch, group))
        self._groups[key] = built
        while len(self._groups) > GROUPS_CACHED:
            self._groups.popitem(last=False)
        if key not in self._kept:
            self._kept[key] = built.table.num_rows
            for reason, count in built.dropped.items():
                self.dropped[reason] = self.dropped.get(reason, 0) + count
        self.rows_read += built.rows_read
        if self.prefetching:
            self._start_prefetch(*self.next_group(epoch, group))
        return built

    def next_group(self, epoch: int, group: int) -> tuple[int, int]:
        return (epoch, group + 1) if group + 1 < self.groups else (epoch + 1, 0)

    def _start_prefetch(self, epoch: int, group: int) -> None:
        key = (epoch, group)
        if key in self._groups or key in self._prefetch or (self.epochs and epoch >= self.epochs):
            return
        if self._pool is None or self._pool[0] != os.getpid():  # a forked dataloader worker: a new thread
            self._pool = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="longvid-prefetch"))
            self._prefetch = {}
        self._prefetch = {k: f for k, f in self._prefetch.items() if k >= (epoch, group - 1)}
        shards = self.group_shards(epoch, group)  # in this thread: the permutation cache is not shared
        self._prefetch[key] = self._pool[1].submit(self._build, epoch, group, shards)

    def quiesce(self) -> None:
        """Finish the prefetches in flight (they stay cached for use)."""
        for future in list(self._prefetch.values()):
            future.exception()

    # -- walking -----------------------------------------------------------------------------
    def normalise(self, where: list[int]) -> bool:
        """Move ``[epoch, group, offset]`` onto a kept unit; False when that would open epoch ``epochs``."""
        epoch, group, offset = where
        empty_run = 0
        while True:
            if self.epochs and epoch >= self.epochs:
                where[:] = [epoch, group, offset]
                return False
            if offset < self.kept(epoch, group):
                where[:] = [epoch, group, offset]
                return True
            empty_run += 1
            if empty_run > self.groups + 1:
                raise ValueError(f"source {self.spec.name!r} has no samples left after its filters "
                                 f"(frames, annotations, where)")
            (epoch, group), offset = self.next_group(epoch, group), 0

    def advance(self, where: list[int], count: int) -> int:
        """Move ``where`` over ``count`` units; returns how many it could (fewer at the epochs limit)."""
        taken = 0
        while taken < count:
            if not self.normalise(where):
                return taken
            epoch, group, offset = where
            step = min(count - taken, self.kept(epoch, group) - offset)
            where[2] += step
            taken += step
        return taken

    def locate(self, where: list[int]) -> tuple[Group, int] | None:
        """The unit at ``where`` (normalised first), or None at the epochs limit."""
        if not self.normalise(where):
            return None
        return self.group(where[0], where[1]), where[2]

    # -- reading a group ---------------------------------------------------------------------
    def _build(self, epoch: int, group: int, shards: list[str]) -> Group:
        table, rows_read, dropped = self._unit_rows(shards)
        annotations = None
        if self.refs:
            annotations = self._annotations(shards)
            turns = video_turns if self.unit == "video" else None
            keep = []
            for i, (key, unit_id) in enumerate(zip(table["key"].to_pylist(), table["id"].to_pylist())):
                has = turns(annotations, key) if turns else clip_turns(annotations, key, unit_id)
                keep.append(bool(has))
            mask = pa.array(keep, pa.bool_())
            if not all(keep):
                dropped["no annotation"] = len(keep) - sum(keep)
                table = table.filter(mask)
        rng = np.random.default_rng([self.seed, self.number, epoch, group + 1])
        table = table.take(pa.array(rng.permutation(table.num_rows), pa.int64()))
        return Group(table=table, annotations=annotations, rows_read=rows_read, dropped=dropped)

    def _unit_rows(self, shards: list[str]) -> tuple[pa.Table, int, dict[str, int]]:
        """The group's units (UNIT_COLUMNS) sorted by (shard, id) after bucket, where and frames filters."""
        media_cols = ["key", "shard", "media_offset", "media_size", "fps", "num_frames", "duration", "bucket",
                      "status"]
        where = self.filters.where
        joined_where = where if where is not None and self._semantic_in(where) else None
        if joined_where is not None:
            where = None  # applied after the semantic columns are joined (_semantic_filter)
        video_filter = pc.field("status") == "ok"
        bad: dict[str, int] = {}  # hostile rows (validate.py) by reason: skipped, counted, never fatal
        if self.unit == "video":
            if where is not None:
                video_filter = video_filter & where.expression
            videos = self.index.read_videos(shards, columns=media_cols + self._where_columns(joined_where, media_cols),
                                            filter=video_filter)
            if joined_where is not None:
                videos = self._semantic_filter(videos, shards, joined_where, with_video_columns)
            rows_read = videos.num_rows
            videos = self._valid(videos, shards, bad)
            n = videos.num_rows
            table = pa.table({
                "id": videos["key"], "key": videos["key"], "shard": videos["shard"],
                "media_offset": videos["media_offset"], "media_size": videos["media_size"], "fps": videos["fps"],
                "start_frame": pa.array(np.zeros(n, np.int64)), "end_frame": videos["num_frames"],
                "start": pa.array(np.zeros(n)), "end": videos["duration"], "duration": videos["duration"],
                "bucket": videos["bucket"],
            })
        else:
            videos = self.index.read_videos(shards, columns=media_cols[:6], filter=video_filter)
            clip_cols = ["clip_id", "key", "start", "end", "start_frame", "end_frame", "duration", "bucket"]
            clips = self.index.read_clips(shards, columns=clip_cols + self._where_columns(joined_where, clip_cols),
                                          filter=where.expression if where is not None else None)
            if joined_where is not None:
                clips = self._semantic_filter(clips, shards, joined_where, with_clip_columns).select(clip_cols)
            rows_read = videos.num_rows + clips.num_rows
            videos, clips = self._valid(videos, shards, bad), self._valid(clips, None, bad)
            joined = clips.join(videos.drop_columns(["num_frames"]), keys="key", join_type="inner")
            table = joined.rename_columns(["id" if c == "clip_id" else c for c in joined.column_names])
        if self.spec.buckets:
            table = table.filter(pc.is_in(table["bucket"], value_set=pa.array(self.spec.buckets, pa.string())))
        table = table.select(UNIT_COLUMNS).sort_by([("shard", "ascending"), ("id", "ascending")])
        dropped: dict[str, int] = {f"bad index row ({reason})": n for reason, n in bad.items()}
        vlen = pc.subtract(table["end_frame"], table["start_frame"]).to_numpy(zero_copy_only=False)
        fps = table["fps"].to_numpy(zero_copy_only=False)
        lo, hi = self.filters.frames_lo, self.filters.frames_hi
        long_enough = np.array([n > 0 and f > 0 and num_sampled_frames(int(n), float(f), lo, hi) > 0
                                for n, f in zip(vlen, fps)], dtype=bool)  # one group: bounded
        if not long_enough.all():
            dropped["too short"] = int((~long_enough).sum())
            table = table.filter(pa.array(long_enough))
        return table, rows_read, dropped

    def _semantic_in(self, where: Where) -> bool:
        return bool(self.filters.semantic_layer) and any(c in semantic_columns(self.unit) for c in where.columns)

    def _where_columns(self, where: Where | None, read: list[str]) -> list[str]:
        """Index columns a filter applied after the join needs besides ``read``."""
        extra = semantic_columns(self.unit)
        return [c for c in (where.columns if where is not None else ()) if c not in read and c not in extra]

    def _semantic_filter(self, table: pa.Table, shards: list[str], where: Where, join) -> pa.Table:
        """``table`` with the group's semantic columns joined, filtered by ``where``."""
        joined = join(table, read_semantic(self.index.storage, self.filters.semantic_layer, shards))
        return joined.filter(where.expression).select(table.column_names)

    def _valid(self, rows: pa.Table, shards: list[str] | None, bad: dict[str, int]) -> pa.Table:
        """``rows`` without the hostile ones (video rows when ``shards`` is given: their byte ranges
        are checked against those shards' sizes), counted into ``bad`` and named in a warning."""
        if shards is not None:
            sizes = self.index.shards.filter(pc.is_in(self.index.shards["shard"], pa.array(shards, pa.string())))
            reasons = video_row_reasons(rows, sizes.select(["shard", "bytes"]))
        else:
            reasons = clip_row_reasons(rows)
        good, rejected = split_rows(rows, reasons)
        if rejected.num_rows:
            for reason, n in reason_counts(rejected).items():
                bad[reason] = bad.get(reason, 0) + n
            warn_rejected("video" if shards is not None else "clip", rejected,
                          "key" if shards is not None else "clip_id")
        return good

    def _annotations(self, shards: list[str]) -> Annotations:
        """The rows of the asked layer versions for these shards only: parts ``<shard-base>-NNNN``."""
        tables = []
        for layer, version in self.refs:
            found = False
            for shard in shards:
                base = shard.rsplit("/", 1)[-1][: -len(".tar")]
                for number in range(MAX_PARTS_PER_SHARD):
                    data = _read_if_exists(self.index.storage,
                                           f"{layer_dir(layer, version)}/{base}-{number:04d}.parquet")
                    if data is None:
                        break
                    found = True
                    tables.append(valid_layer_rows(pq.read_table(io.BytesIO(data)), f"{layer}/{version}").select(
                        ["key", "clip_id", "start", "end", "value", "value_type"]))
            if not found:
                self._check_layer_naming(layer, version)
        ann = Annotations(layers=list(self.refs))
        for table in tables:
            for row in table.to_pylist():  # the layer rows of one group: bounded
                ann.add(row)
        for spans in ann.clips_of.values():
            spans.sort()
        return ann

    def _check_layer_naming(self, layer: str, version: str) -> None:
        """Once per layer: a group found no part; refuse a layer whose parts are not named by shard."""
        with self._lock:
            if (layer, version) in self._layer_checked:
                return
            self._layer_checked.add((layer, version))
        parts = layer_parts(self.index.storage, layer, version)
        if not parts:
            raise FileNotFoundError(f"no annotation layer {layer}/{version} in {self.index.storage.root}")
        foreign = [p for p in parts if not _SHARD_PART.search(p)]
        if foreign:
            raise ValueError(f"annotation layer {layer}/{version} has parts not named after a video shard "
                             f"({foreign[0].rsplit('/', 1)[-1]}): the stream reads a layer shard by shard "
                             f"(<shard-base>-NNNN.parquet, as `longvid annotate` writes); rename the parts")


class Mixer:
    """Which source each global draw takes: weighted, seeded per block of MIX_BLOCK draws."""

    def __init__(self, seed: int, weights: np.ndarray):
        self.seed, self.weights = seed, weights
        self._cache: tuple[int, np.ndarray] | None = None

    def block(self, number: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != number:
            rng = np.random.default_rng([self.seed, 0x6D6978, number])
            self._cache = (number, rng.choice(len(self.weights), size=MIX_BLOCK, p=self.weights))
        return self._cache[1]

    def choices(self, start: int, count: int) -> np.ndarray:
        """Source numbers of draws ``start .. start + count``."""
        if len(self.weights) == 1:
            return np.zeros(count, dtype=np.int64)
        out, index, end = [], start, start + count
        while index < end:
            block, offset = divmod(index, MIX_BLOCK)
            piece = self.block(block)[offset : offset + (end - index)]
            out.append(piece)
            index += len(piece)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
