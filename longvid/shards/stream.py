"""Streaming ingested shards into training: a seeded, weighted, resumable mix of datasets as a
PyTorch ``IterableDataset``, split over ranks and dataloader workers sample by sample.

Opens a dataset from its shard table and plans at shard level (``stream_order``): a group's index
rows are read only when the walk reaches them, and per sample only the byte ranges the demuxer
asks for (``seekio``). Never reads the whole index; a sample that fails is counted, never raised.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .batching import TokenBudgetBatcher
from .catalog import DatasetIndex, open_index
from .conversation import build_conversation, clip_turns, video_turns
from .sampling import BUCKET_LABELS, STAGES_BY_NAME, TOKENS_PER_FRAME, frame_indices
from .seekio import DEFAULT_BLOCK, DecodeStats, MemberFile, decode_frames
from .storage import Storage
from .stream_order import Cursor, Mixer, SourcePlan, UnitFilters
from .where import compile_where

log = logging.getLogger("longvid.stream")

ORDER_VERSION = 2  # bump when the order an unchanged recipe gives changes: old states are then refused
UNITS = ("video", "clip")
EVEN_RANKS = ("pad", "drop")
# Shorthands for duration-bucket filters: "long" is 3 minutes and up (SEEDS.md §4's long videos).
BUCKET_GROUPS = {"long": BUCKET_LABELS[4:], "short": BUCKET_LABELS[:4]}
SKIP_MARK = "__skipped__"  # key of the stand-in a dataloader worker yields for a failed sample
POSITION = "__position__"  # key carrying a sample's position in its rank's stream
CURSOR = "__cursor__"  # key carrying, from a dataloader worker, the global cursor after the sample's draw
WALK_CHUNK = 1 << 16  # mixing draws counted per numpy step when the walk jumps ahead

__all__ = ["ShardStream", "SourceSpec", "StreamConfig", "StreamLoader", "TokenBudgetBatcher", "training_source"]


@dataclass
class SourceSpec:
    """One source of the mix: a dataset, optionally narrowed to some duration buckets or a filter."""

    dataset: str  # dataset root written by `longvid ingest`: a folder or s3://bucket/prefix
    weight: float = 1.0  # share of the mixed stream's draws (weights are normalised over sources)
    unit: str = ""  # video | clip; empty: the stream's unit
    # duration buckets kept (labels of sampling.DURATION_BUCKETS, or "long"/"short"); empty: all
    buckets: list[str] = field(default_factory=list)
    name: str = ""  # label in each sample's "source"; empty: dataset[unit,buckets]
    # read-time filter over the unit's index columns (shards/where.py), e.g. "duration > 2"; empty: all
    where: str = ""
    # LAYER/VERSION of an embedding layer whose `dedup-semantic` result joins the index rows, so the
    # filter can read semantic_* columns (docs/curation.md); empty: none
    semantic_layer: str = ""


@dataclass
class StreamConfig:
    sources: list[SourceSpec] = field(default_factory=list)  # what to mix; one source is a plain dataset
    stage: str = "stage3"  # training stage whose dynamic_fps1 bounds choose the frames (SEEDS.md §1)
    frames_lo: int = 0  # lower frame bound; 0: the stage's (a trainer's StageConfig may differ from §1)
    frames_hi: int = 0  # upper frame bound; 0: the stage's
    unit: str = "video"  # default sample unit of the sources: whole videos or clips
    layers: list[str] = field(default_factory=list)  # annotation layer versions (caption/v1...); empty: frames only
    seed: int = 0  # shard order, sample order and mixing all derive from it
    # shards whose samples are shuffled together, and read together: more mixes better, fewer keeps
    # memory and the first read small (a group of 4 shards of ~2,400 clips is ~10k index rows)
    shard_group: int = 4
    resize: int = 0  # short side of returned frames in pixels; 0 keeps the stored size
    decode: bool = True  # False: metadata only (no "frames"), for planning and mixing checks
    epochs: int = 0  # 0: endless (the trainer's mode); N: end where a source would begin its epoch N
    # with epochs: every rank yields the same count; "pad" repeats the stream's first draws on the ranks
    # short of one (no sample lost: the usual DDP choice), "drop" leaves out the last partial row of ranks
    even_ranks: str = "pad"
    block_size: int = DEFAULT_BLOCK  # bytes per ranged read of a media member
    threaded_decode: bool = True  # PyAV frame threads; turn off with many dataloader workers per core

    def bounds(self) -> tuple[int, int]:
        if self.stage not in STAGES_BY_NAME and not (self.frames_lo and self.frames_hi):
            raise ValueError(f"unknown stage {self.stage!r} (one of {sorted(STAGES_BY_NAME)}) and no frames_lo/hi")
        stage = STAGES_BY_NAME.get(self.stage)
        return self.frames_lo or stage.lo, self.frames_hi or stage.hi


@dataclass
class Plan:
    """The sequence S that ranks split: ``pending`` global draw indices, then every draw from
    ``continue_at`` on; ``base`` is the cursor at S[0]. A fresh stream has S = all draws; a resume on
    another world size has the draws the old ranks left unconsumed (see ``load_state_dict``)."""

    pending: list[int]
    continue_at: int
    base: Cursor

    def at(self, j: int) -> int:
        return self.pending[j] if j < len(self.pending) else self.continue_at + j - len(self.pending)

    def to_dict(self) -> dict:
        return {"pending": list(self.pending), "continue_at": self.continue_at, "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, value: dict) -> "Plan":
        return cls([int(x) for x in value["pending"]], int(value["continue_at"]), Cursor.from_dict(value["base"]))


def expand_buckets(buckets: list[str]) -> list[str]:
    out: list[str] = []
    for name in buckets:
        if name in BUCKET_GROUPS:
            out += list(BUCKET_GROUPS[name])
        elif name in BUCKET_LABELS:
            out.append(name)
        else:
            raise ValueError(f"unknown duration bucket {name!r}: one of {list(BUCKET_LABELS)} or long/short")
    return sorted(set(out), key=BUCKET_LABELS.index)


class ShardStream(IterableDataset):
    """Samples of a weighted mix of ingested datasets, in a seeded order, for one rank.

    The global order interleaves the sources by seeded draws. Ranks split the sequence S of the
    current plan (all draws, for a fresh stream): rank ``r`` of ``W`` takes ``S[j]`` for
    ``j ≡ r (mod W)``, and a rank's ``q``-th item goes to dataloader worker ``q % workers``
    (counted from where this iteration began), so in an epoch every sample reaches exactly one
    consumer. The state is the count of items this rank consumed and the cursor there.
    """

    def __init__(self, config: StreamConfig, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
        if not config.sources:
            raise ValueError("a stream needs at least one source (a dataset root)")
        if config.unit not in UNITS or any(s.unit and s.unit not in UNITS for s in config.sources):
            raise ValueError(f"unit must be one of {UNITS}")
        if config.shard_group < 1:
            raise ValueError("shard_group must be >= 1")
        if config.even_ranks not in EVEN_RANKS:
            raise ValueError(f"even_ranks must be one of {EVEN_RANKS}, got {config.even_ranks!r}")
        self.config, self.rank, self.world_size = config, rank, world_size
        self.frames_lo, self.frames_hi = config.bounds()
        self.skipped: dict[str, int] = {}
        self.decode_stats = DecodeStats()
        self.emit_markers = False  # set by StreamLoader: workers then yield stand-ins for failed samples
        self._storages: dict[str, Storage] = {}
        self._indexes: dict[str, DatasetIndex] = {}
        self.sources = [self._build_source(i, spec) for i, spec in enumerate(config.sources)]
        weights = np.array([s.spec.weight for s in self.sources], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.weights = weights / weights.sum()
        for source in self.sources:
            if len(source) == 0 and source.spec.weight > 0:
                raise ValueError(f"source {source.spec.name!r} has no samples (after its bucket filter)")
        self.mixer = Mixer(config.seed, self.weights)
        self.plan = Plan([], 0, self._start())
        self.end: int | None = None  # global index of the first draw that does not exist (epochs mode)
        self.position = 0  # items of this rank's stream consumed (yielded or skipped)
        self.cursor: Cursor | None = None  # the global cursor just after this rank's last consumed draw
        for source in self.sources:
            if source.spec.weight > 0:  # the first group: validates filters and layers where it is cheap
                source.prefetching = False
                source.locate([0, 0, 0])
                source.prefetching = True

    # -- building --------------------------------------------------------------------------
    def _start(self) -> Cursor:
        return Cursor(0, [[0, 0, 0] for _ in self.sources])

    def _index(self, root: str) -> DatasetIndex:
        if root not in self._indexes:
            self._storages[root] = Storage.for_uri(root)
            self._indexes[root] = open_index(self._storages[root])
        return self._indexes[root]

    def _build_source(self, number: int, spec: SourceSpec) -> SourcePlan:
        unit = spec.unit or self.config.unit
        buckets = expand_buckets(list(spec.buckets))
        label = f"[{unit}" + (":" + ",".join(buckets) if buckets else "") + (f" where {spec.where}" if spec.where
                                                                               else "") + "]"
        spec = SourceSpec(spec.dataset, float(spec.weight), unit, buckets, spec.name or spec.dataset + label,
                          spec.where, spec.semantic_layer)
        filters = UnitFilters(self.frames_lo, self.frames_hi, list(self.config.layers),
                              compile_where(spec.where) if spec.where else None, spec.semantic_layer)
        return SourcePlan(number, spec, unit, self._index(spec.dataset), filters, self.config.seed,
                          self.config.shard_group, self.config.epochs)

    def recipe(self) -> dict:
        """Everything that decides the order and content of the stream; a state is valid only for it."""
        return {
            "kind": "longvid.shards.stream", "order_version": ORDER_VERSION, "seed": self.config.seed,
            "stage": self.config.stage, "frames": [self.frames_lo, self.frames_hi],
            "layers": list(self.config.layers), "shard_group": self.config.shard_group,
            "epochs": self.config.epochs, "even_ranks": self.config.even_ranks,
            "sources": [{"dataset": s.spec.dataset, "unit": s.unit, "buckets": list(s.spec.buckets),
                         "where": s.spec.where, "weight": s.spec.weight, "name": s.spec.name,
                         **({"semantic_layer": s.spec.semantic_layer} if s.spec.semantic_layer else {}),
                         "planned": len(s), "shards": len(s.shards), "digest": s.digest}
                        for s in self.sources],
        }

    # -- walking the global order ----------------------------------------------------------
    def _take(self, cursor: Cursor) -> tuple[SourcePlan, int, object, int] | None:
        """The draw at ``cursor.index`` as (source, epoch, group, offset), advancing; None at the end."""
        number = int(self.mixer.choices(cursor.index, 1)[0])
        source = self.sources[number]
        where = cursor.sources[number]
        found = source.locate(where)
        if found is None:
            self.end = cursor.index
            return None
        group, offset = found
        epoch = where[0]
        where[2] += 1
        cursor.index += 1
        return source, epoch, group, offset

    def _advance(self, cursor: Cursor, count: int) -> bool:
        """Move ``cursor`` over ``count`` draws in place (numpy counts per source); False at the end."""
        while count > 0:
            span = min(count, WALK_CHUNK)
            choices = self.mixer.choices(cursor.index, span)
            per_source = np.bincount(choices, minlength=len(self.sources))
            before = cursor.copy()
            short = []
            for number in np.flatnonzero(per_source):
                taken = self.sources[number].advance(cursor.sources[number], int(per_source[number]))
                if taken < per_source[number]:
                    short.append(int(np.flatnonzero(choices == number)[taken]))
            if short:  # the first missing draw ends the stream: redo the chunk up to it
                stop = min(short)
                cursor.index, cursor.sources = before.index, before.sources
                head = np.bincount(choices[:stop], minlength=len(self.sources))
                for number in np.flatnonzero(head):
                    self.sources[number].advance(cursor.sources[number], int(head[number]))
                cursor.index += stop
                self.end = cursor.index
                return False
            cursor.index += span
            count -= span
        return True

    def _walk_to(self, cursor: Cursor, index: int) -> Cursor | None:
        """``cursor`` moved to global ``index`` (in place), or None if the stream ends before it."""
        if index < cursor.index:
            raise RuntimeError(f"stream walk went backwards ({cursor.index} -> {index})")
        if self.end is not None and index >= self.end:
            return None
        return cursor if self._advance(cursor, index - cursor.index) else None

    def _exists(self, probe: Cursor, j: int) -> bool:
        """Does S[j] exist (epochs mode)? ``probe`` walks ahead monotonically to find the end."""
        if j < len(self.plan.pending):
            return True
        index = self.plan.at(j)
        if self.end is not None:
            return index < self.end
        if index < probe.index:
            return True
        if self._walk_to(probe, index) is None:
            return False
        return self._take(probe.copy()) is not None

    def _length(self) -> int:
        """Items in S once the end is known."""
        return len(self.plan.pending) + max(0, self.end - self.plan.continue_at)

    def _items(self, first: int, step: int) -> Iterator[tuple[int, tuple, Cursor | None]]:
        """yields (position q, draw, cursor after the draw or None for padding) for this rank's items
        first, first + step, ...; ``self.cursor`` must be the cursor after item ``self.position - 1``."""
        W, r, epochs = self.world_size, self.rank, self.config.epochs
        walker = (self.cursor or self.plan.base).copy()
        probe, padder = walker.copy(), self._start()
        q = first
        while True:
            j = q * W + r
            if epochs:
                row_probe = (q + 1) * W - 1 if self.config.even_ranks == "drop" else q * W
                if not self._exists(probe, row_probe):
                    return
                if not self._exists(probe, j):  # pad: this rank's share of the last row wraps to the start
                    if self.end == 0:
                        return
                    target = (j - self._length()) % self.end
                    if target < padder.index:
                        padder = self._start()
                    self._walk_to(padder, target)
                    yield q, self._take(padder.copy()), None
                    q += step
                    continue
            if self._walk_to(walker, self.plan.at(j)) is None:
                return
            draw = self._take(walker)
            if draw is None:
                return
            yield q, draw, walker.copy()
            q += step

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """This rank's state. Take it on every rank at the same step: a resume on another world size
        needs all of them (``load_state_dict({"ranks": [...]})``)."""
        sources = (self.cursor or self.plan.base).sources
        return {"recipe": self.recipe(), "world_size": self.world_size, "rank": self.rank,
                "position": self.position, "epoch": min(s[0] for s in sources),
                "cursor": self.cursor.to_dict() if self.cursor is not None else None, "plan": self.plan.to_dict()}

    def _check_recipe(self, state) -> None:
        mine = self.recipe()
        theirs = state.get("recipe") if isinstance(state, dict) else None
        if theirs != mine:
            differ = sorted(k for k in set(mine) | set(theirs or {}) if (theirs or {}).get(k) != mine.get(k))
            raise ValueError(f"this data state was saved by a different stream recipe (differs in: {differ}); "
                             f"refusing to resume from it")

    def load_state_dict(self, state: dict) -> None:
        """Resume from this rank's own state (same world size), or from ``{"ranks": [state of every
        rank, taken at the same step]}`` on any world size: the epoch then still delivers every
        sample exactly once."""
        if isinstance(state, dict) and "ranks" in state:
            self._load_all(list(state["ranks"]))
            return
        self._check_recipe(state)
        if (state["world_size"], state["rank"]) != (self.world_size, self.rank):
            raise ValueError(f"this data state is rank {state['rank']} of {state['world_size']}, this stream is "
                             f"rank {self.rank} of {self.world_size}: to change the world size, pass every "
                             f"rank's state: load_state_dict({{'ranks': [state_0, state_1, ...]}})")
        plan, position = Plan.from_dict(state["plan"]), int(state["position"])
        cursor = Cursor.from_dict(state["cursor"]) if state["cursor"] is not None else None
        if len(plan.base.sources) != len(self.sources) or (cursor is not None and position == 0):
            raise ValueError("inconsistent data state: its cursor does not match its sources or position")
        self.plan, self.position, self.cursor = plan, position, cursor
        self.end = None

    def _load_all(self, states: list[dict]) -> None:
        for state in states:
            self._check_recipe(state)
        old_w = states[0]["world_size"] if states else 0
        ranks = sorted(int(s["rank"]) for s in states)
        if ranks != list(range(old_w)) or any(s["world_size"] != old_w for s in states):
            raise ValueError(f"a world-size change needs the state of every rank 0..{old_w - 1} taken at the same "
                             f"step; got ranks {ranks}")
        if any(s["plan"] != states[0]["plan"] for s in states):
            raise ValueError("the rank states come from different runs (their plans differ)")
        by_rank = {int(s["rank"]): s for s in states}
        if old_w == self.world_size:
            self.load_state_dict(by_rank[self.rank])
            return
        self.plan, self.position, self.cursor = self._merged_plan(by_rank, old_w), 0, None

    def _merged_plan(self, by_rank: dict[int, dict], old_w: int) -> Plan:
        """The draws no old rank consumed, as a new plan: a ragged window of pending draws, then the rest."""
        old = Plan.from_dict(by_rank[0]["plan"])
        done = {r: int(s["position"]) for r, s in by_rank.items()}
        lo = min(done[r] * old_w + r for r in done)  # first unconsumed j
        hi = max([(done[r] - 1) * old_w + r + 1 for r in done if done[r] > 0] or [0])  # after the last consumed
        keep = [j for j in range(lo, hi) if j >= done[j % old_w] * old_w + j % old_w]
        keep += list(range(max(lo, hi), len(old.pending)))
        continue_at = old.continue_at + max(0, hi - len(old.pending))
        self.plan = old  # walk in the old plan's coordinates
        first = min(by_rank.items(), key=lambda item: done[item[0]] * old_w + item[0])[1]
        start = Cursor.from_dict(first["cursor"]) if first["cursor"] is not None else old.base
        walker = start.copy()
        pending = []
        for j in keep:  # ascending draws; at the end of an epochs stream some may not exist
            if self._walk_to(walker, old.at(j)) is None or self._take(walker.copy()) is None:
                break
            pending.append(old.at(j))
        base = start.copy()
        if self._walk_to(base, pending[0] if pending else continue_at) is None:
            base = start.copy()  # nothing left (an epochs stream past its end): any earlier cursor will find it
        return Plan(pending, continue_at, base)

    # -- iteration -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            yield from self._iter_worker(info.id, info.num_workers)
            return
        # yields sample dicts; this object's position moves before each yield (a consumer-side count)
        for position, draw, after in self._items(self.position, 1):
            self.position = position + 1
            if after is not None:
                self.cursor = after
            sample = self._sample(draw, position, after)
            if SKIP_MARK in sample:
                if info is not None and self.emit_markers:
                    yield sample
                continue
            if info is None:
                sample.pop(CURSOR, None)
            yield sample

    def _iter_worker(self, worker: int, workers: int) -> Iterator[dict]:
        # yields this worker's share: items start + worker, start + worker + workers, ...
        for position, draw, after in self._items(self.position + worker, workers):
            sample = self._sample(draw, position, after)
            if SKIP_MARK in sample and not self.emit_markers:
                continue
            yield sample

    def advance(self, count: int = 1) -> None:
        """Count ``count`` items of this rank's stream as consumed without building them (metadata walk)."""
        for position, _, after in itertools.islice(self._items(self.position, 1), count):
            self.position = position + 1
            if after is not None:
                self.cursor = after

    def consume(self, item: dict) -> None:
        """Count an item that came back from a dataloader worker as consumed (StreamLoader does this)."""
        self.position = int(item[POSITION]) + 1
        if item.get(CURSOR) is not None:
            self.cursor = Cursor.from_dict(item[CURSOR])

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _sample(self, draw: tuple, position: int, after: Cursor | None) -> dict:
        source, epoch, group, offset = draw
        row = group.table.slice(offset, 1).to_pylist()[0]
        vlen = row["end_frame"] - row["start_frame"]
        indices = [row["start_frame"] + i for i in frame_indices(vlen, row["fps"], self.frames_lo, self.frames_hi)]
        sample = {"__key__": row["id"], POSITION: position, "frame_indices": indices, "duration": row["duration"],
                  "visual_tokens": len(indices) * TOKENS_PER_FRAME, "source": source.spec.name, "epoch": epoch,
                  CURSOR: after.to_dict() if after is not None else None}
        if after is None:
            sample["padding"] = True  # a repeat that evens out the ranks' counts (even_ranks="pad")
        if source.unit == "clip":
            sample.update(start=row["start"], end=row["end"], video_key=row["key"])
        turns = []
        if group.annotations is not None:
            ann = group.annotations
            turns = video_turns(ann, row["key"]) if source.unit == "video" else clip_turns(ann, row["key"], row["id"])
        sample["conversations"] = build_conversation(turns, row["duration"], len(indices)) if turns else []
        if not self.config.decode:
            return sample
        member = MemberFile(self._storages[source.spec.dataset], row["shard"], row["media_offset"],
                            row["media_size"], block_size=self.config.block_size)
        try:
            frames = decode_frames(member, indices, resize=self.config.resize,
                                   threads=self.config.threaded_decode, stats=self.decode_stats)
        except Exception as exc:  # noqa: BLE001 - a bad sample is data: counted and skipped, never fatal
            reason = "decode error" if isinstance(exc, ValueError) or "av." in type(exc).__module__ else "read error"
            self._skip(reason)
            log.warning("skipped %s (%s in %s): %s; skipped so far %s", row["id"], reason, row["shard"], exc,
                        self.skipped)
            return {SKIP_MARK: reason, POSITION: position, "__key__": row["id"], CURSOR: sample[CURSOR]}
        finally:
            self.decode_stats.bytes_fetched += member.bytes_fetched
            member.close()
        sample["frames"] = torch.from_numpy(frames)
        return sample

    def stats(self) -> dict:
        dropped: dict[str, int] = {}
        for source in self.sources:
            for reason, count in source.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + count
        return {"position": self.position, "skipped": dict(self.skipped), "dropped": dropped,
                "planned": {s.spec.name: len(s) for s in self.sources},
                "index_rows_read": sum(s.rows_read for s in self.sources), "decode": asdict(self.decode_stats)}

    def quiesce(self) -> None:
        """Wait for the background group reads (before a fork)."""
        for source in self.sources:
            source.quiesce()

    def loader(self, num_workers: int = 2, **dataloader_options) -> "StreamLoader":
        return StreamLoader(self, num_workers=num_workers, **dataloader_options)


class StreamLoader:
    """A torch DataLoader over a ShardStream (batch_size=None) that keeps the stream's state in the
    main process: workers stand in for failed samples and send the cursor with each item, so items
    arrive in the rank's order and ``state_dict`` is exact with any number of workers; the main
    process never walks the order or reads index rows itself."""

    def __init__(self, stream: ShardStream, num_workers: int = 2, **dataloader_options):
        self.stream, self.num_workers, self.options = stream, num_workers, dataloader_options

    def __iter__(self) -> Iterator[dict]:
        self.stream.emit_markers = self.num_workers > 0
        self.stream.quiesce()  # no prefetch thread may hold a lock while the workers fork
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, **self.options)
        for item in loader:
            if item[POSITION] != self.stream.position and self.num_workers > 0:
                raise RuntimeError(f"stream out of order: got position {item[POSITION]}, "
                                   f"expected {self.stream.position}")
            if self.num_workers > 0:
                self.stream.consume(item)
            item.pop(CURSOR, None)
            if SKIP_MARK in item:
                if self.num_workers > 0:  # a worker's count does not reach this process
                    self.stream._skip(item[SKIP_MARK])
                continue
            yield item

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def stats(self) -> dict:
        return self.stream.stats()


def source_specs(datasets=(), weights=(), sources=None, buckets=(), where: str = "") -> list[SourceSpec]:
    """Sources from factory options: ``sources`` (dicts of SourceSpec fields), or ``datasets`` with
    parallel ``weights`` (and one ``buckets`` / ``where`` for all)."""
    if sources:
        return [s if isinstance(s, SourceSpec) else SourceSpec(**s) for s in sources]
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    weights = list(weights) or [1.0] * len(datasets)
    if len(weights) != len(datasets):
        raise ValueError(f"{len(weights)} weights for {len(datasets)} datasets")
    return [SourceSpec(d, float(w), buckets=list(buckets), where=where) for d, w in zip(datasets, weights)]


def training_source(stage, rank: int = 0, world_size: int = 1, seed: int = 0, datasets=(), weights=(),
                    sources=None, buckets=(), where: str = "", workers: int = 0,
                    **options) -> ShardStream | StreamLoader:
    """Data factory for the trainer's ``data.source`` (``longvid.shards.stream:training_source``):
    an endless stream for ``stage`` (its name and frames_lo/frames_hi), this rank's share.
    ``workers`` > 0 decodes in that many dataloader processes (a StreamLoader, same state);
    ``options`` are StreamConfig fields (layers, unit, resize, shard_group, ...)."""
    config = StreamConfig(sources=source_specs(datasets, weights, sources, buckets, where), stage=stage.name,
                          frames_lo=stage.frames_lo, frames_hi=stage.frames_hi, seed=seed, **options)
    if config.epochs:
        raise ValueError("a training source is endless: leave epochs at 0")
    stream = ShardStream(config, rank=rank, world_size=world_size)
    return stream.loader(num_workers=workers) if workers > 0 else stream
