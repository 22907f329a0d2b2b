"""Ingestion: manifest → fetch → dedup → probe → segment → plan → write, on Ray Data.

The pipeline is the list returned by :func:`build_stages`; each stage is an annotator plus its
resources. Writers commit whole shards, then index parts; a rerun skips what is committed and
retries what failed. Failures are ledger rows, never crashes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import ray

from ..annotators.base import ItemFailed, Resources, Stage
from ..annotators.captioners import CaptionerConfig
from ..annotators.captioners.stage import CaptionStage, PrepareCaptionFrames
from ..annotators.fetch import Fetch, FetchConfig
from ..annotators.plan import Plan, video_record
from ..annotators.probe import Probe
from ..annotators.remux import to_mp4
from ..annotators.segment import SegmentConfig
from ..shards.catalog import open_index
from ..shards.dataset import finalize
from ..shards.compact import update_index
from ..shards.index import repair_index_parts, write_index_part
from ..shards.layers import layer_dir, write_layer_meta, write_layer_part
from ..shards.ledger import Ledger, new_run_id
from ..shards.schema import STATUS_FAILED, STATUS_OK, video_id_for
from ..shards.storage import Storage
from ..shards.writer import ShardWriter, encode_json, shard_number
from .manifest import read_manifest
from .segment_parallel import ParallelSegment
from .stages import ActorStage, StageSpec, decode_row, encode_row, row_mapper

log = logging.getLogger("longvid")


@dataclass
class ShardConfig:
    max_bytes: int = 1 << 30  # 1 GiB: large enough for sequential reads, small enough to retry an upload
    max_videos: int = 64  # videos per shard (and per writer call): bounds what a killed writer loses


MEDIA_CHOICES = ("mp4", "source")


@dataclass
class WriteConfig:
    # mp4: every media member is KEY.mp4, remuxed by stream copy (same frames and timestamps; one
    # extension per dataset is what HF datasets / Ray Data need, faststart serves ranged reads).
    # source: keep the source bytes and container (for users who must ship the originals).
    media: str = "mp4"  # mp4 (remux, stream copy: one member extension per dataset) | source (keep the source bytes)

    def check(self) -> None:
        if self.media not in MEDIA_CHOICES:
            raise ValueError(f"write.media must be one of {', '.join(MEDIA_CHOICES)}, got {self.media!r}")


@dataclass
class StageResourcesConfig:
    fetch_cpus: float = 0.25  # fetch is network-bound: four fetches share a core
    probe_cpus: float = 0.25  # header parsing only
    segment_cpus: float = 1.0  # one streamed decode per video fills a core
    plan_cpus: float = 0.1  # arithmetic
    write_cpus: float = 0.5  # tar writing and upload
    writers: int = 2  # shard-writer actors (each writes its own shards in parallel)


@dataclass
class RayConfig:
    address: str | None = None  # cluster to join ("auto" inside `ray job submit`); unset: RAY_ADDRESS or a new local Ray
    num_cpus: int | None = None  # logical CPUs of a new local Ray (default: the machine's cores)
    object_store_mb: int = 1024  # object store of a new local Ray; rows carry whole videos
    progress_bars: bool = True  # Ray Data's per-stage progress bars


@dataclass
class IngestCaptionConfig:
    enabled: bool = False  # caption every clip while ingesting (else run `longvid annotate` later)
    layer: str = "caption"  # annotation layer the captions go to
    version: str = "v1"  # layer version (a later `longvid annotate` run can add v2 beside it)
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    prepare_stage: bool = True  # decode and resize clip frames in a CPU stage so the model never waits on decoding
    prepare_cpus: float = 1.0  # CPUs per frame-preparation task (one decode per video)
    actors: int = 1  # captioner actors (one model each); one per GPU on a GPU cluster
    num_gpus: float = 1.0  # GPU share per captioner actor; 0 on a machine without GPUs
    num_cpus: float = 1.0  # CPUs per captioner actor
    batch_size: int = 8  # videos per captioner call (all their clips go to the engine together)


@dataclass
class IngestConfig:
    fetch: FetchConfig = field(default_factory=FetchConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    resources: StageResourcesConfig = field(default_factory=StageResourcesConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    caption: IngestCaptionConfig = field(default_factory=IngestCaptionConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    ledger_flush_s: float = 10.0  # how often the ledger is saved while running (a kill loses at most this)
    progress_s: float = 5.0  # seconds between progress lines


# -- shared state across workers -------------------------------------------------------------


@ray.remote(num_cpus=0)
class ContentRegistry:
    """Content hash → the first video key holding it; and keys already committed to a shard."""

    def __init__(self, owners: dict[str, str], committed: list[str]):
        self.owners = dict(owners)
        self.committed = set(committed)

    def claim(self, sha256: str, key: str) -> str:
        return self.owners.setdefault(sha256, key)

    def uncommitted(self, keys: list[str]) -> list[str]:
        return [k for k in keys if k not in self.committed]

    def mark_committed(self, keys: list[str]) -> None:
        self.committed.update(keys)


@ray.remote(num_cpus=0)
class ShardCounter:
    def __init__(self, start: int):
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value - 1


class Dedup(Stage):
    """Marks an item whose content another key already holds; its bytes are dropped."""

    name = "dedup"
    resources = Resources(num_cpus=0.05)

    def __init__(self, registry):
        self.registry = registry

    def process(self, item: dict) -> dict:
        owner = ray.get(self.registry.claim.remote(item["sha256"], item["video_id"]))
        if owner != item["video_id"]:
            item["duplicate_of"] = owner
            item["media"] = None
        return item


def build_stages(config: IngestConfig, registry) -> list[StageSpec]:
    """The pipeline, top to bottom (the writer is added by :func:`run_ingest`)."""
    r, c = config.resources, config.caption
    stages = [
        StageSpec(Fetch(config.fetch), num_cpus=r.fetch_cpus),
        StageSpec(Dedup(registry), num_cpus=0.05),
        StageSpec(Probe(), num_cpus=r.probe_cpus),
        StageSpec(ParallelSegment(config.segment, window_cpus=r.segment_cpus), num_cpus=r.segment_cpus),
        StageSpec(Plan(), num_cpus=r.plan_cpus),
    ]
    if c.enabled:
        if c.prepare_stage:
            stages.append(StageSpec(PrepareCaptionFrames(c.captioner), num_cpus=c.prepare_cpus))
        caption = CaptionStage(c.captioner, c.layer, c.version, num_gpus=c.num_gpus, num_cpus=c.num_cpus)
        stages.append(StageSpec(caption, num_cpus=c.num_cpus, num_gpus=c.num_gpus, actors=c.actors,
                                batch_size=c.batch_size))
    return stages


# -- the writer ------------------------------------------------------------------------------


def ledger_row(item: dict, shard: str | None = None) -> dict:
    """The ledger's view of a finished item."""
    src = item["source"]
    row = {"source_index": src["source_index"], "url": src["url"], "video_id": item.get("video_id"),
           "sha256": item.get("sha256"), "duration": (item.get("probe") or {}).get("duration")}
    if item.get("failed"):
        row.update(status=STATUS_FAILED, action="failed", stage=item["failed"]["stage"], reason=item["failed"]["reason"])
    elif item.get("duplicate_of"):
        row.update(status=STATUS_OK, action="duplicate", stage="dedup", duplicate_of=item["duplicate_of"],
                   reason=item.get("duplicate_reason", "same content as another source (sha256)"))
    else:
        row.update(status=STATUS_OK, action="written", stage="write", shard=shard)
    return row


class ShardWriteStage:
    """Actor: writes each batch of finished items into whole shards, then their index parts."""

    def __init__(self, root: str, counter, registry, shard_config: ShardConfig, caption: IngestCaptionConfig,
                 write: WriteConfig | None = None):
        self.storage = Storage.for_uri(root)
        self.counter, self.registry = counter, registry
        self.config = shard_config
        self.caption = caption
        self.write = write or WriteConfig()

    def __call__(self, batch: dict) -> dict:
        items = [decode_row({"item": i, "media": m}) for i, m in zip(batch["item"], batch["media"])]
        good = [it for it in items if not (it.get("failed") or it.get("duplicate_of"))]
        fresh = set(ray.get(self.registry.uncommitted.remote([it["video_id"] for it in good])))
        records: dict[str, dict] = {}
        shard_of: dict[str, str] = {}

        annotations = {it["video_id"]: it.get("annotations", {}) for it in good}

        def on_commit(shard):
            write_index_part(self.storage, shard, records)
            if self.caption.enabled:
                self._write_captions(shard, annotations)
            keys = [s.key for s in shard.samples]
            ray.get(self.registry.mark_committed.remote(keys))
            shard_of.update({k: shard.name for k in keys})

        writer = ShardWriter(self.storage, lambda: ray.get(self.counter.next.remote()),
                             max_bytes=self.config.max_bytes, max_samples=self.config.max_videos, on_commit=on_commit)
        with writer:
            for it in good:
                key = it["video_id"]
                if key not in fresh:  # a retried batch: already committed by an earlier attempt
                    continue
                ext, media = self._media_member(it)
                if ext is None:
                    continue
                record = video_record(it)
                record["video"].update(it.pop("media_info", {}))
                records[key] = record
                writer.write(key, {"json": encode_json(record), ext: media})
                it["media"] = None
        rows = [ledger_row(it, shard_of.get(it.get("video_id"))) for it in items]
        return {"ledger": [json.dumps(r) for r in rows]}

    def _media_member(self, item: dict) -> tuple[str | None, bytes | None]:
        """(extension, bytes) of the item's media member; (None, None) marks the item failed."""
        source_ext = item["probe"]["media_ext"]
        if self.write.media == "source":
            return source_ext, item["media"]
        try:
            media, item["media_info"] = to_mp4(item["media"], source_ext)
        except ItemFailed as exc:
            item["failed"] = {"stage": "remux", "reason": str(exc)}
            return None, None
        return "mp4", media

    def _write_captions(self, shard, annotations: dict[str, dict]) -> None:
        """The shard's captions as one layer part named after it; clip failures in the layer's ledger."""
        c = self.caption
        part = shard.name.rsplit("/", 1)[-1][: -len(".tar")]
        rows, producer = [], None
        ledger = Ledger(self.storage, f"ingest-{part}", directory=f"{layer_dir(c.layer, c.version)}/ledger")
        for sample in shard.samples:
            produced = annotations.get(sample.key, {}).get(c.layer, {}).get(c.version)
            if produced is None:
                continue
            producer = produced["producer"]
            rows.extend(produced["rows"])
            for failure in produced["failures"]:
                ledger.add(video_id=sample.key, url=failure.get("clip_id"), status=STATUS_FAILED, action="failed",
                           stage="caption", reason=failure["reason"], shard=shard.name)
        write_layer_part(self.storage, c.layer, c.version, part, rows)
        if ledger.rows:
            ledger.flush()
        if producer is not None:
            write_layer_meta(self.storage, c.layer, c.version, {"producer": producer, "written_by": "ingest"})


# -- the driver ------------------------------------------------------------------------------


@dataclass
class IngestSummary:
    run_id: str
    sources: int = 0
    written: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    failures: Counter = field(default_factory=Counter)  # "stage: reason" → count
    video_seconds: float = 0.0
    clips: int = 0
    shards_written: int = 0
    wall_s: float = 0.0
    dataset: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["failures"] = dict(self.failures)
        return d

    def format(self) -> str:
        rate = self.video_seconds / self.wall_s if self.wall_s else 0.0
        lines = [
            f"run {self.run_id}: {self.sources} sources in {self.wall_s:.1f} s",
            f"  written {self.written} · skipped (already committed) {self.skipped} · duplicates {self.duplicates} · failed {self.failed}",
            f"  ingested {self.video_seconds / 3600:.3f} h of video ({self.video_seconds:.1f} s) · {self.clips} clips · "
            f"{self.shards_written} new shards · {rate:.1f} video-seconds/s",
        ]
        for reason, n in self.failures.most_common():
            lines.append(f"  failed ×{n}: {reason}")
        if self.dataset:
            c = self.dataset["counts"]
            lines.append(f"  dataset: {c['videos']} videos, {c['clips']} clips, {c['shards']} shards, {self.dataset['hours']:.3f} h")
        return "\n".join(lines)


def connect_ray(config: RayConfig) -> bool:
    """Join or start Ray; True when this call started it (and so should stop it)."""
    if ray.is_initialized():
        return False
    address = config.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=config.num_cpus, object_store_memory=config.object_store_mb << 20,
                 include_dashboard=False, log_to_driver=True)
    return True


def _committed_state(storage: Storage, manifest_keys: list[str]) -> tuple[dict[str, str], set[str], int]:
    """(sha256 → key of every committed video, the manifest's keys already committed, next shard number).

    Brings the shard table up to date first (incremental: only parts a killed run left behind are
    read), then scans the index's ``key`` and ``sha256`` columns only. The committed check is an
    Arrow ``is_in`` of the manifest's keys against the index keys, so the set it returns is bounded
    by the manifest. The sha256 → key dict is what the ``ContentRegistry`` actor holds: one entry
    per committed video (the next bottleneck at corpus scale; see docs/index.md).
    """
    repaired = repair_index_parts(storage)
    if repaired:
        log.warning("rebuilt index parts of %d shard(s) committed by a killed run", len(repaired))
    update_index(storage)
    videos = open_index(storage).videos_dataset().to_table(columns=["key", "sha256"])
    owners = dict(zip(videos["sha256"].to_pylist(), videos["key"].to_pylist()))
    wanted = pa.array(manifest_keys, pa.string())
    committed = set(wanted.filter(pc.is_in(wanted, value_set=videos["key"].combine_chunks())).to_pylist())
    numbers = [shard_number(p) for p in storage.list("videos") if p.endswith(".tar")]
    return owners, committed, (max(numbers) + 1 if numbers else 0)


def _plan_sources(rows: list[dict], committed: set[str], ledger: Ledger, summary: IngestSummary) -> list[dict]:
    """Drop what needs no work (bad rows, committed keys, repeated URLs), recording each."""
    todo, seen = [], {}
    for row in rows:
        base = {"source_index": row["source_index"], "url": row["url"]}
        if not row["url"]:
            ledger.add(**base, status=STATUS_FAILED, action="failed", stage="manifest", reason="empty url")
            summary.failed += 1
            summary.failures["manifest: empty url"] += 1
            continue
        key = video_id_for(row["url"])
        if key in committed:
            ledger.add(**base, video_id=key, status=STATUS_OK, action="skipped", stage="resume", reason="already committed")
            summary.skipped += 1
        elif key in seen:
            ledger.add(**base, video_id=key, status=STATUS_OK, action="duplicate", stage="manifest",
                       duplicate_of=key, reason=f"same URL as manifest row {seen[key]}")
            summary.duplicates += 1
        else:
            seen[key] = row["source_index"]
            todo.append({"source": row, "video_id": key})
    return todo


def _build_dataset(items: list[dict], stages: list[StageSpec], out: str, config: IngestConfig, counter, registry):
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = config.ray.progress_bars
    ds = ray.data.from_items([encode_row(dict(it)) for it in items], override_num_blocks=max(1, min(len(items), 10000)))
    for spec in stages:  # the pipeline, top to bottom
        if spec.actors:
            ds = ds.map_batches(ActorStage, fn_constructor_args=(spec.stage,), batch_size=spec.batch_size,
                                compute=ray.data.ActorPoolStrategy(size=spec.actors),
                                num_cpus=spec.num_cpus, num_gpus=spec.num_gpus)
        else:
            ds = ds.map(row_mapper(spec.stage), num_cpus=spec.num_cpus)
    writers = _writers_that_fit(config.resources)
    return ds.map_batches(
        ShardWriteStage, fn_constructor_args=(out, counter, registry, config.shards, config.caption, config.write),
        batch_size=config.shards.max_videos, num_cpus=config.resources.write_cpus,
        compute=ray.data.ActorPoolStrategy(size=writers),
    )


def _writers_that_fit(r: StageResourcesConfig) -> int:
    """Writer actors hold their CPUs for the whole run: never let them take over half the
    cluster, or the stages that feed them starve and the run stalls (seen on a 2-core machine)."""
    total = float(ray.cluster_resources().get("CPU", 1.0))
    fit = max(1, int(0.5 * total / max(r.write_cpus, 1e-3)))
    if r.writers > fit:
        log.warning("resources.writers=%d × %.2f CPU would hold over half of the cluster's %.0f CPUs; using %d",
                    r.writers, r.write_cpus, total, fit)
    return max(1, min(r.writers, fit))


def _record(row: dict, ledger: Ledger, summary: IngestSummary, shards: set[str], clips: dict) -> None:
    ledger.add(**row)
    if row["action"] == "written":
        summary.written += 1
        summary.video_seconds += row.get("duration") or 0.0
        shards.add(row["shard"])
    elif row["action"] == "duplicate":
        summary.duplicates += 1
    else:
        summary.failed += 1
        summary.failures[f"{row['stage']}: {row['reason']}"] += 1


def run_ingest(manifest: str, out: str, config: IngestConfig | None = None, log_stream=sys.stderr) -> IngestSummary:
    config = config or IngestConfig()
    config.write.check()
    t0 = time.time()
    storage = Storage.for_uri(out)
    summary = IngestSummary(run_id=new_run_id())
    ledger = Ledger(storage, summary.run_id)
    rows = read_manifest(manifest)
    summary.sources = len(rows)
    manifest_keys = [video_id_for(row["url"]) for row in rows if row["url"]]
    owners, committed, next_shard = _committed_state(storage, manifest_keys)
    todo = _plan_sources(rows, committed, ledger, summary)
    print(f"[longvid] run {summary.run_id}: {len(rows)} sources, {len(todo)} to process, "
          f"{summary.skipped} already committed → {storage.root}", file=log_stream, flush=True)
    started = connect_ray(config.ray)
    try:
        if todo:
            registry = ContentRegistry.remote(owners, sorted(committed))
            counter = ShardCounter.remote(next_shard)
            ds = _build_dataset(todo, build_stages(config, registry), out, config, counter, registry)
            shards: set[str] = set()
            last_flush = last_progress = time.time()
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for text in batch["ledger"]:
                    _record(json.loads(text), ledger, summary, shards, {})
                now = time.time()
                if now - last_flush > config.ledger_flush_s:
                    ledger.flush()
                    last_flush = now
                if now - last_progress > config.progress_s:
                    done = summary.written + summary.failed + summary.duplicates + summary.skipped
                    print(f"[longvid] {done}/{len(rows)} sources · written {summary.written} · failed {summary.failed}"
                          f" · {summary.video_seconds / 3600:.2f} h · {now - t0:.0f} s", file=log_stream, flush=True)
                    last_progress = now
            summary.shards_written = len(shards)
        _explain_duplicates_of_failures(ledger, summary)
        ledger.flush()
        summary.dataset = finalize(storage)
        summary.clips = _clips_written(storage, ledger)
    finally:
        if started:
            ray.shutdown()
    summary.wall_s = time.time() - t0
    return summary


def _explain_duplicates_of_failures(ledger: Ledger, summary: IngestSummary) -> None:
    """A duplicate of content whose first copy failed in this run failed too: say so."""
    failed = {r["video_id"]: r for r in ledger.rows if r["status"] == STATUS_FAILED and r["video_id"]}
    for r in ledger.rows:
        first = failed.get(r.get("duplicate_of") or "")
        if r["action"] == "duplicate" and first is not None:
            r.update(status=STATUS_FAILED, action="failed", stage=first["stage"],
                     reason=f"same content as {first['url']}, which failed: {first['reason']}")
            summary.duplicates -= 1
            summary.failed += 1
            summary.failures[f"{first['stage']}: {first['reason']}"] += 1


def _clips_written(storage: Storage, ledger: Ledger) -> int:
    """Clip rows of the videos this run wrote (an Arrow count over the ``key`` column)."""
    written = sorted({r["video_id"] for r in ledger.rows if r["action"] == "written"})
    if not written:
        return 0
    clips = open_index(storage).clips_dataset()
    return clips.count_rows(filter=pc.field("key").isin(pa.array(written, pa.string())))
