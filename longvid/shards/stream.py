"""Streaming ingested shards into training: a seeded, weighted, resumable mix of datasets as a
PyTorch ``IterableDataset``, split over ranks and dataloader workers sample by sample.

Reads the index once and, per sample, only the byte ranges the demuxer asks for (``seekio``):
never a whole shard, never a whole long video. A sample that fails is counted, never raised.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .conversation import Annotations, build_conversation, clip_turns, video_turns
from .index import read_index_parts
from .sampling import BUCKET_LABELS, STAGES_BY_NAME, TOKENS_PER_FRAME, frame_indices, num_sampled_frames
from .seekio import DEFAULT_BLOCK, DecodeStats, MemberFile, decode_frames
from .storage import Storage

log = logging.getLogger("longvid.stream")

ORDER_VERSION = 1  # bump when the order an unchanged recipe gives changes: old states are then refused
MIX_BLOCK = 4096  # mixing draws come from one RNG per block of global indices, so any index is reachable
UNITS = ("video", "clip")
# Shorthands for duration-bucket filters: "long" is 3 minutes and up (SEEDS.md §4's long videos).
BUCKET_GROUPS = {"long": BUCKET_LABELS[4:], "short": BUCKET_LABELS[:4]}
SKIP_MARK = "__skipped__"  # key of the stand-in a dataloader worker yields for a failed sample
POSITION = "__position__"  # key carrying a sample's position in its rank's stream


@dataclass
class SourceSpec:
    """One source of the mix: a dataset, optionally narrowed to some duration buckets."""

    dataset: str  # dataset root written by `longvid ingest`: a folder or s3://bucket/prefix
    weight: float = 1.0  # share of the mixed stream's draws (weights are normalised over sources)
    unit: str = ""  # video | clip; empty: the stream's unit
    # duration buckets kept (labels of sampling.DURATION_BUCKETS, or "long"/"short"); empty: all
    buckets: list[str] = field(default_factory=list)
    name: str = ""  # label in each sample's "source"; empty: dataset[unit,buckets]


@dataclass
class StreamConfig:
    sources: list[SourceSpec] = field(default_factory=list)  # what to mix; one source is a plain dataset
    stage: str = "stage3"  # training stage whose dynamic_fps1 bounds choose the frames (SEEDS.md §1)
    frames_lo: int = 0  # lower frame bound; 0: the stage's (a trainer's StageConfig may differ from §1)
    frames_hi: int = 0  # upper frame bound; 0: the stage's
    unit: str = "video"  # default sample unit of the sources: whole videos or clips
    layers: list[str] = field(default_factory=list)  # annotation layer versions (caption/v1...); empty: frames only
    seed: int = 0  # shard order, sample order and mixing all derive from it
    shard_group: int = 4  # shards whose samples are shuffled together: more mixes better, fewer keeps reads close
    resize: int = 0  # short side of returned frames in pixels; 0 keeps the stored size
    decode: bool = True  # False: metadata only (no "frames"), for planning and mixing checks
    epochs: int = 0  # 0: endless (the trainer's mode); N: end where a source would begin its epoch N
    block_size: int = DEFAULT_BLOCK  # bytes per ranged read of a media member
    threaded_decode: bool = True  # PyAV frame threads; turn off with many dataloader workers per core

    def bounds(self) -> tuple[int, int]:
        if self.stage not in STAGES_BY_NAME and not (self.frames_lo and self.frames_hi):
            raise ValueError(f"unknown stage {self.stage!r} (one of {sorted(STAGES_BY_NAME)}) and no frames_lo/hi")
        stage = STAGES_BY_NAME.get(self.stage)
        return self.frames_lo or stage.lo, self.frames_hi or stage.hi


@dataclass
class Cursor:
    """Where the global mixed order stands: the next global index and each source's (epoch, position)."""

    index: int = 0
    sources: list[list[int]] = field(default_factory=list)

    def copy(self) -> "Cursor":
        return Cursor(self.index, [list(s) for s in self.sources])


class SourceUnits:
    """The samples of one source (rows of the index), and their order in each epoch."""

    def __init__(self, number: int, spec: SourceSpec, unit: str, table: pa.Table, seed: int, shard_group: int):
        self.number, self.spec, self.unit, self.table = number, spec, unit, table
        self.seed, self.shard_group = seed, shard_group
        # unit numbers grouped by shard, shards in name order: one sort, not a scan per shard
        encoded = pc.dictionary_encode(table["shard"].combine_chunks())
        names = encoded.dictionary.to_pylist()
        rank_of_name = np.argsort(np.argsort(names)).astype(np.int64)
        codes = rank_of_name[encoded.indices.to_numpy(zero_copy_only=False)] if names else np.zeros(0, np.int64)
        sizes = np.bincount(codes, minlength=len(names))
        self.by_shard = np.split(np.argsort(codes, kind="stable"), np.cumsum(sizes)[:-1]) if names else []
        ids = table["id"].to_pylist()
        self.digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.table.num_rows

    def order(self, epoch: int) -> np.ndarray:
        """Unit numbers of ``epoch``: shards shuffled, then samples shuffled within groups of shards."""
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, self.number, epoch])
            shard_order = rng.permutation(len(self.by_shard))
            parts = []
            for g, first in enumerate(range(0, len(shard_order), self.shard_group)):
                members = np.concatenate([self.by_shard[s] for s in shard_order[first : first + self.shard_group]])
                parts.append(np.random.default_rng([self.seed, self.number, epoch, g + 1]).permutation(members))
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}  # at most two epochs kept
            self._orders[epoch] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self._orders[epoch]

    def row(self, unit: int) -> dict:
        return self.table.slice(int(unit), 1).to_pylist()[0]


def unit_table(storage: Storage, unit: str, buckets: list[str]) -> pa.Table:
    """One row per sample unit with where its bytes lie, its span and its bucket, sorted by (shard, id)."""
    videos, clips = read_index_parts(storage)
    videos = videos.filter(pc.equal(videos["status"], "ok"))
    media = videos.select(["key", "media_offset", "media_size", "fps", "num_frames"])
    if unit == "video":
        n = videos.num_rows
        table = pa.table({
            "id": videos["key"], "key": videos["key"], "shard": videos["shard"],
            "media_offset": videos["media_offset"], "media_size": videos["media_size"], "fps": videos["fps"],
            "start_frame": pa.array([0] * n, pa.int64()), "end_frame": videos["num_frames"],
            "start": pa.array([0.0] * n, pa.float64()), "end": videos["duration"],
            "duration": videos["duration"], "bucket": videos["bucket"],
        })
    else:
        joined = clips.join(media, keys="key", join_type="inner")
        table = pa.table({
            "id": joined["clip_id"], "key": joined["key"], "shard": joined["shard"],
            "media_offset": joined["media_offset"], "media_size": joined["media_size"], "fps": joined["fps"],
            "start_frame": joined["start_frame"], "end_frame": joined["end_frame"],
            "start": joined["start"], "end": joined["end"], "duration": joined["duration"], "bucket": joined["bucket"],
        })
    if buckets:
        table = table.filter(pc.is_in(table["bucket"], value_set=pa.array(buckets, pa.string())))
    return table.sort_by([("shard", "ascending"), ("id", "ascending")])


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

    The global order interleaves the sources by seeded draws; global index ``g`` goes to rank
    ``g % world_size``, and a rank's ``p``-th item to dataloader worker ``p % num_workers``
    (counted from where this iteration began), so in an epoch every sample reaches exactly one
    consumer. The state is the number of items this rank consumed plus the cursor there.
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
        self.config, self.rank, self.world_size = config, rank, world_size
        self.frames_lo, self.frames_hi = config.bounds()
        self.skipped: dict[str, int] = {}
        self.decode_stats = DecodeStats()
        self.emit_markers = False  # set by StreamLoader: workers then yield stand-ins for failed samples
        self._storages: dict[str, Storage] = {}
        self._annotations: dict[str, Annotations] = {}
        self.sources = [self._build_source(i, spec) for i, spec in enumerate(config.sources)]
        weights = np.array([s.spec.weight for s in self.sources], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.weights = weights / weights.sum()
        for source in self.sources:
            if len(source) == 0 and source.spec.weight > 0:
                raise ValueError(f"source {source.spec.name!r} has no samples (after filters and annotations)")
        self._mix_cache: tuple[int, np.ndarray] | None = None
        self.position = 0  # items of this rank's stream consumed (yielded or skipped)
        self.cursor = self._cursor_for_position(0, Cursor(0, [[0, 0] for _ in self.sources]))

    # -- building --------------------------------------------------------------------------
    def _storage(self, root: str) -> Storage:
        if root not in self._storages:
            self._storages[root] = Storage.for_uri(root)
        return self._storages[root]

    def _build_source(self, number: int, spec: SourceSpec) -> SourceUnits:
        unit = spec.unit or self.config.unit
        buckets = expand_buckets(list(spec.buckets))
        spec = SourceSpec(spec.dataset, float(spec.weight), unit, buckets,
                          spec.name or spec.dataset + (f"[{unit}" + (":" + ",".join(buckets) if buckets else "") + "]"))
        table = unit_table(self._storage(spec.dataset), unit, buckets)
        keep = []
        for i, row in enumerate(table.select(["id", "key", "fps", "start_frame", "end_frame"]).to_pylist()):
            vlen = row["end_frame"] - row["start_frame"]
            if vlen <= 0 or not row["fps"] or num_sampled_frames(vlen, row["fps"], self.frames_lo, self.frames_hi) <= 0:
                self._skip("too short")
            elif self.config.layers and not self._turns(spec.dataset, unit, row["key"], row["id"]):
                self._skip("no annotation")
            else:
                keep.append(i)
        table = table.take(pa.array(keep, pa.int64())) if len(keep) < table.num_rows else table
        return SourceUnits(number, spec, unit, table, self.config.seed, self.config.shard_group)

    def _turns(self, dataset: str, unit: str, key: str, unit_id: str) -> list[tuple[str, str]]:
        if dataset not in self._annotations:
            self._annotations[dataset] = Annotations.load(self._storage(dataset), list(self.config.layers))
        ann = self._annotations[dataset]
        return video_turns(ann, key) if unit == "video" else clip_turns(ann, key, unit_id)

    def recipe(self) -> dict:
        """Everything that decides the order and content of the stream; a state is valid only for it."""
        return {
            "kind": "longvid.shards.stream", "order_version": ORDER_VERSION, "seed": self.config.seed,
            "stage": self.config.stage, "frames": [self.frames_lo, self.frames_hi],
            "layers": list(self.config.layers), "shard_group": self.config.shard_group,
            "rank": self.rank, "world_size": self.world_size, "epochs": self.config.epochs,
            "sources": [{"dataset": s.spec.dataset, "unit": s.unit, "buckets": list(s.spec.buckets),
                         "weight": s.spec.weight, "name": s.spec.name, "samples": len(s), "digest": s.digest}
                        for s in self.sources],
        }

    # -- the global order ------------------------------------------------------------------
    def _choice(self, index: int) -> int:
        if len(self.sources) == 1:
            return 0
        block = index // MIX_BLOCK
        if self._mix_cache is None or self._mix_cache[0] != block:
            rng = np.random.default_rng([self.config.seed, 0x6D6978, block])
            self._mix_cache = (block, rng.choice(len(self.sources), size=MIX_BLOCK, p=self.weights))
        return int(self._mix_cache[1][index % MIX_BLOCK])

    def _take(self, cursor: Cursor) -> tuple[SourceUnits, int, int] | None:
        """The draw at ``cursor.index`` as (source, epoch, unit), advancing the cursor; None at the end."""
        number = self._choice(cursor.index)
        source = self.sources[number]
        epoch, pos = cursor.sources[number]
        if pos >= len(source):
            epoch, pos = epoch + 1, 0
        if self.config.epochs and epoch >= self.config.epochs:
            return None
        unit = int(source.order(epoch)[pos])
        cursor.sources[number] = [epoch, pos + 1]
        cursor.index += 1
        return source, epoch, unit

    def _skip_draws(self, cursor: Cursor, count: int) -> None:
        for _ in range(count):
            if self._take(cursor) is None:
                return

    def _cursor_for_position(self, position: int, cursor: Cursor) -> Cursor:
        """Advance ``cursor`` (at some earlier own item) to this rank's item ``position``."""
        target = position * self.world_size + self.rank
        cursor = cursor.copy()
        self._skip_draws(cursor, target - cursor.index)
        return cursor

    def _rank_items(self, cursor: Cursor) -> Iterator[tuple[Cursor, tuple[SourceUnits, int, int]]]:
        """yields (cursor at this rank's next item, draw) for each item of this rank, in order."""
        cursor = cursor.copy()
        while True:
            draw = self._take(cursor)
            if draw is None:
                return
            self._skip_draws(cursor, self.world_size - 1)
            yield cursor.copy(), draw

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        epochs = [e + (p >= len(s)) for (e, p), s in zip(self.cursor.sources, self.sources)]
        return {"recipe": self.recipe(), "epoch": min(epochs), "position": self.position,
                "global_index": self.cursor.index, "sources": [list(s) for s in self.cursor.sources]}

    def load_state_dict(self, state: dict) -> None:
        mine = self.recipe()
        theirs = state.get("recipe") if isinstance(state, dict) else None
        if theirs != mine:
            differ = sorted(k for k in set(mine) | set(theirs or {}) if (theirs or {}).get(k) != mine.get(k))
            raise ValueError(f"this data state was saved by a different stream recipe (differs in: {differ}); "
                             f"refusing to resume from it")
        position, index = int(state["position"]), int(state["global_index"])
        if index != position * self.world_size + self.rank or len(state["sources"]) != len(self.sources):
            raise ValueError("inconsistent data state: global_index does not match position, rank and world_size")
        self.position = position
        self.cursor = Cursor(index, [[int(e), int(p)] for e, p in state["sources"]])

    def advance(self) -> None:
        """Count one item of this rank's stream as consumed (done by a StreamLoader in the main process)."""
        self.cursor = self._cursor_for_position(self.position + 1, self.cursor)
        self.position += 1

    # -- iteration -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            yield from self._iter_worker(info.id, info.num_workers)
            return
        # yields sample dicts; this object's position moves before each yield (a consumer-side count)
        for cursor, draw in self._rank_items(self.cursor):
            position = self.position
            self.cursor, self.position = cursor, position + 1
            sample = self._sample(draw, position)
            if SKIP_MARK in sample:
                if info is not None and self.emit_markers:
                    yield sample
                continue
            yield sample

    def _iter_worker(self, worker: int, workers: int) -> Iterator[dict]:
        # yields this worker's share: items start + worker, start + worker + workers, ...
        start = self.position
        for offset, (_, draw) in enumerate(self._rank_items(self.cursor)):
            if offset % workers != worker:
                continue
            sample = self._sample(draw, start + offset)
            if SKIP_MARK in sample and not self.emit_markers:
                continue
            yield sample

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _sample(self, draw: tuple[SourceUnits, int, int], position: int) -> dict:
        source, epoch, unit = draw
        row = source.row(unit)
        vlen = row["end_frame"] - row["start_frame"]
        indices = [row["start_frame"] + i for i in frame_indices(vlen, row["fps"], self.frames_lo, self.frames_hi)]
        sample = {"__key__": row["id"], POSITION: position, "frame_indices": indices, "duration": row["duration"],
                  "visual_tokens": len(indices) * TOKENS_PER_FRAME, "source": source.spec.name, "epoch": epoch}
        if source.unit == "clip":
            sample.update(start=row["start"], end=row["end"], video_key=row["key"])
        turns = self._turns(source.spec.dataset, source.unit, row["key"], row["id"]) if self.config.layers else []
        sample["conversations"] = build_conversation(turns, row["duration"], len(indices)) if turns else []
        if not self.config.decode:
            return sample
        member = MemberFile(self._storage(source.spec.dataset), row["shard"], row["media_offset"], row["media_size"],
                            block_size=self.config.block_size)
        try:
            frames = decode_frames(member, indices, resize=self.config.resize,
                                   threads=self.config.threaded_decode, stats=self.decode_stats)
        except Exception as exc:  # noqa: BLE001 - a bad sample is data: counted and skipped, never fatal
            reason = "decode error" if isinstance(exc, ValueError) or "av." in type(exc).__module__ else "read error"
            self._skip(reason)
            log.warning("skipped %s (%s in %s): %s; skipped so far %s", row["id"], reason, row["shard"], exc,
                        self.skipped)
            return {SKIP_MARK: reason, POSITION: position, "__key__": row["id"]}
        finally:
            self.decode_stats.bytes_fetched += member.bytes_fetched
            member.close()
        sample["frames"] = torch.from_numpy(frames)
        return sample

    def stats(self) -> dict:
        return {"position": self.position, "skipped": dict(self.skipped),
                "samples": {s.spec.name: len(s) for s in self.sources}, "decode": asdict(self.decode_stats)}

    def loader(self, num_workers: int = 2, **dataloader_options) -> "StreamLoader":
        return StreamLoader(self, num_workers=num_workers, **dataloader_options)


class StreamLoader:
    """A torch DataLoader over a ShardStream (batch_size=None) that keeps the stream's state in the
    main process: workers stand in for failed samples, so items arrive in the rank's order and the
    consumed count stays exact; ``state_dict`` is then valid with any number of workers."""

    def __init__(self, stream: ShardStream, num_workers: int = 2, **dataloader_options):
        self.stream, self.num_workers, self.options = stream, num_workers, dataloader_options

    def __iter__(self) -> Iterator[dict]:
        self.stream.emit_markers = self.num_workers > 0
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, **self.options)
        for item in loader:
            if item[POSITION] != self.stream.position and self.num_workers > 0:
                raise RuntimeError(f"stream out of order: got position {item[POSITION]}, "
                                   f"expected {self.stream.position}")
            if self.num_workers > 0:
                self.stream.advance()
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


class TokenBudgetBatcher:
    """Length-grouped batches under a visual-token budget: take ``buffer_size`` samples, sort them
    by visual tokens, cut batches whose padded size (samples x longest) fits ``budget``, and hand
    the batches out in a seeded order so long and short ones interleave.

    The state is the source's state at the start of the current buffer plus the batches of that
    buffer already handed out: a resume re-reads the buffer and skips those batches.
    """

    def __init__(self, source, budget: int, buffer_size: int = 64, max_batch: int = 0, seed: int = 0):
        if budget <= 0 or buffer_size <= 0:
            raise ValueError("budget and buffer_size must be positive")
        self.source, self.budget, self.buffer_size = source, budget, buffer_size
        self.max_batch, self.seed = max_batch, seed
        self.buffer_number, self.done = 0, 0
        self._buffer_state = source.state_dict()

    def cut(self, samples: list[dict]) -> list[list[dict]]:
        ranked = sorted(range(len(samples)), key=lambda i: (samples[i]["visual_tokens"], i))
        batches: list[list[dict]] = []
        current: list[dict] = []
        for i in ranked:
            sample = samples[i]
            full = self.max_batch and len(current) >= self.max_batch
            if current and (full or sample["visual_tokens"] * (len(current) + 1) > self.budget):
                batches.append(current)
                current = []
            current.append(sample)
        if current:
            batches.append(current)
        return batches

    def __iter__(self) -> Iterator[list[dict]]:
        samples = iter(self.source)
        while True:
            self._buffer_state = self.source.state_dict()
            buffer = [s for _, s in zip(range(self.buffer_size), samples)]
            if not buffer:
                return
            batches = self.cut(buffer)
            order = np.random.default_rng([self.seed, self.buffer_number]).permutation(len(batches))
            while self.done < len(batches):
                self.done += 1
                yield batches[order[self.done - 1]]
            self.buffer_number, self.done = self.buffer_number + 1, 0

    def state_dict(self) -> dict:
        return {"source": self._buffer_state, "buffer_number": self.buffer_number, "done": self.done,
                "budget": self.budget, "buffer_size": self.buffer_size, "max_batch": self.max_batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.budget, self.buffer_size, self.max_batch, self.seed)
        if (state["budget"], state["buffer_size"], state["max_batch"], state["seed"]) != mine:
            raise ValueError("this batcher state was saved with a different budget, buffer size or seed")
        self.source.load_state_dict(state["source"])
        self._buffer_state = state["source"]
        self.buffer_number, self.done = int(state["buffer_number"]), int(state["done"])


def source_specs(datasets=(), weights=(), sources=None, buckets=()) -> list[SourceSpec]:
    """Sources from factory options: ``sources`` (dicts of SourceSpec fields), or ``datasets`` with
    parallel ``weights``."""
    if sources:
        return [s if isinstance(s, SourceSpec) else SourceSpec(**s) for s in sources]
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    weights = list(weights) or [1.0] * len(datasets)
    if len(weights) != len(datasets):
        raise ValueError(f"{len(weights)} weights for {len(datasets)} datasets")
    return [SourceSpec(d, float(w), buckets=list(buckets)) for d, w in zip(datasets, weights)]


def training_source(stage, rank: int = 0, world_size: int = 1, seed: int = 0, datasets=(), weights=(),
                    sources=None, buckets=(), workers: int = 0, **options) -> ShardStream | StreamLoader:
    """Data factory for the trainer's ``data.source`` (``longvid.shards.stream:training_source``):
    an endless stream for ``stage`` (its name and frames_lo/frames_hi), this rank's share.
    ``workers`` > 0 decodes in that many dataloader processes (a StreamLoader, same state);
    ``options`` are StreamConfig fields (layers, unit, resize, shard_group, ...)."""
    config = StreamConfig(sources=source_specs(datasets, weights, sources, buckets), stage=stage.name,
                          frames_lo=stage.frames_lo, frames_hi=stage.frames_hi, seed=seed, **options)
    if config.epochs:
        raise ValueError("a training source is endless: leave epochs at 0")
    stream = ShardStream(config, rank=rank, world_size=world_size)
    return stream.loader(num_workers=workers) if workers > 0 else stream
