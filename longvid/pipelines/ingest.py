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

import ray

from ..config import check_positive

from ..annotators.base import Resources, Stage
from ..annotators.captioners import CaptionerConfig
from ..annotators.captioners.stage import CaptionStage, PrepareCaptionFrames
from ..annotators.fetch import Fetch, FetchConfig
from ..annotators.plan import Plan, video_record
from ..annotators.probe import Probe
from ..annotators.segment import Segment, SegmentConfig
from ..shards.dataset import finalize
from ..shards.faults import fault_point
from ..shards.index import part_paths, read_index_parts, rebuild_index_part, repair_index_parts, write_index_part
from ..shards.layers import layer_dir, write_layer_meta, write_layer_part
from ..shards.ledger import Ledger, new_run_id
from ..shards.schema import STATUS_FAILED, STATUS_OK, video_id_for
from ..shards.storage import Storage
from ..shards.repair import drop_duplicate_keys
from ..shards.writer import CommittedShard, ShardWriter, WrittenSample, encode_json, shard_name, shard_number
from .manifest import Manifest, load_manifest
from .stages import ActorStage, StageSpec, decode_row, encode_row, row_mapper

log = logging.getLogger("longvid")


@dataclass
class ShardConfig:
    max_bytes: int = 1 << 30  # 1 GiB: large enough for sequential reads, small enough to retry an upload
    max_videos: int = 64  # videos per shard (and per writer call): bounds what a killed writer loses

    def __post_init__(self):
        check_positive("shards", max_bytes=self.max_bytes, max_videos=self.max_videos)


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
        fault_point("registry-claim")
        return self.owners.setdefault(sha256, key)

    def uncommitted(self, keys: list[str]) -> list[str]:
        return [k for k in keys if k not in self.committed]

    def mark_committed(self, keys: list[str]) -> None:
        self.committed.update(keys)


class Dedup(Stage):
    """Marks an item whose content another key already holds; its bytes are dropped."""

    name = "dedup"
    resources = Resources(num_cpus=0.05)

    def __init__(self, registry):
        self.registry = registry

    def process(self, item: dict) -> dict:
        fault_point("worker-dedup")
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
        StageSpec(Segment(config.segment), num_cpus=r.segment_cpus),
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
        notes = (item.get("probe") or {}).get("notes") or []  # a header overruled, a preview track skipped
        row.update(status=STATUS_OK, action="written", stage="probe" if notes else "write", shard=shard,
                   reason="; ".join(notes) or None)
    return row


def plan_shard_groups(items: list[dict], max_bytes: int, max_videos: int) -> list[list[dict]]:
    """Split a writer batch into the shards it will become, in order, by size and count.

    Deterministic in the batch alone, so a retried batch forms the same groups: with the shard
    named after its group (:meth:`ShardWriteStage.shard_for`), the published shard is the mark.
    """
    groups: list[list[dict]] = []
    size = 0
    for it in items:
        item_bytes = len(it["media"] or b"") + 4096  # media plus its record JSON, roughly
        if groups and groups[-1] and (len(groups[-1]) >= max_videos or size + item_bytes > max_bytes):
            groups.append([])
            size = 0
        if not groups:
            groups.append([])
        groups[-1].append(it)
        size += item_bytes
    return groups


class ShardWriteStage:
    """Actor: writes each batch of finished items into whole shards, then their index parts.

    Exactly once under a kill at any instant: a shard's number is ``first_shard`` plus the
    manifest row of its first video, so a retried batch (Ray restarts a killed writer and runs
    the batch again) computes the same names, finds a shard already published, and only
    completes what the killed attempt left out (its index part, its captions).
    """

    def __init__(self, root: str, first_shard: int, registry, shard_config: ShardConfig, caption: IngestCaptionConfig):
        self.storage = Storage.for_uri(root)
        self.first_shard, self.registry = first_shard, registry
        self.config = shard_config
        self.caption = caption

    def shard_for(self, group: list[dict]) -> str:
        return shard_name(self.first_shard + int(group[0]["source"]["source_index"]))

    def __call__(self, batch: dict) -> dict:
        items = [decode_row({"item": i, "media": m}) for i, m in zip(batch["item"], batch["media"])]
        good = [it for it in items if not (it.get("failed") or it.get("duplicate_of"))]
        shard_of: dict[str, str] = {}
        for group in plan_shard_groups(good, self.config.max_bytes, self.config.max_videos):
            name = self.shard_for(group)
            if self.storage.exists(name):  # published by a killed attempt of this same batch
                self._complete_published(name, group)
            else:
                self._write_group(name, group)
            shard_of.update({it["video_id"]: name for it in group})
            for it in group:
                it["media"] = None
        rows = [ledger_row(it, shard_of.get(it.get("video_id"))) for it in items]
        return {"ledger": [json.dumps(r) for r in rows]}

    def _write_group(self, name: str, group: list[dict]) -> None:
        records = {it["video_id"]: video_record(it) for it in group}
        annotations = {it["video_id"]: it.get("annotations", {}) for it in group}

        def on_commit(shard):
            fault_point("writer-after-publish")
            write_index_part(self.storage, shard, records)
            fault_point("writer-after-index")
            if self.caption.enabled:
                self._write_captions(shard, annotations)

        number = shard_number(name)
        writer = ShardWriter(self.storage, lambda: number, max_bytes=1 << 62, max_samples=len(group) + 1,
                             on_commit=on_commit)
        with writer:
            for it in group:
                key = it["video_id"]
                writer.write(key, {"json": encode_json(records[key]), it["probe"]["media_ext"]: it["media"]})

    def _complete_published(self, name: str, group: list[dict]) -> None:
        if not self.storage.exists(part_paths(name)[0]):
            rebuild_index_part(self.storage, name)  # from the shard itself: its offsets are the truth
        if self.caption.enabled:
            samples = [WrittenSample(key=it["video_id"], shard=name, members={}) for it in group]
            self._write_captions(CommittedShard(name=name, bytes=0, samples=samples),
                                 {it["video_id"]: it.get("annotations", {}) for it in group})

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


def reason_class(reason: str) -> str:
    """The stable part of a reason (``not_found: /a/b.mp4`` → ``not_found``) that summaries group by."""
    head, sep, _ = (reason or "").partition(": ")
    return head if sep and len(head) <= 48 else (reason or "")


@dataclass
class IngestSummary:
    run_id: str
    sources: int = 0
    written: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    failures: Counter = field(default_factory=Counter)  # "stage: reason class" → count (1,000 missing files: one line)
    examples: dict = field(default_factory=dict)  # "stage: reason class" → the first full reason seen
    video_seconds: float = 0.0
    clips: int = 0
    shards_written: int = 0
    wall_s: float = 0.0
    dataset: dict = field(default_factory=dict)

    def add_failure(self, stage: str, reason: str) -> None:
        group = f"{stage}: {reason_class(reason)}"
        self.failed += 1
        self.failures[group] += 1
        self.examples.setdefault(group, reason)

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
            example = self.examples.get(reason, "")
            lines.append(f"  failed ×{n}: {reason}" + (f" (e.g. {example[:200]})" if example and example != reason else ""))
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


def _shard_numbers(storage: Storage) -> list[int]:
    numbers = []
    for path in storage.list("videos"):
        try:
            numbers.append(shard_number(path))
        except ValueError:
            continue  # not a shard of ours; it is never read
    return numbers


def _drop_duplicates(storage: Storage, ledger: Ledger) -> None:
    """A key in two shards (a killed writer's retried batch grouped otherwise): keep the lowest."""
    videos, _ = read_index_parts(storage)
    for note in drop_duplicate_keys(storage, videos):
        log.warning("shard %s: %s", note["shard"], note["reason"])
        for key in note["keys"]:
            ledger.add(video_id=key, status=STATUS_OK, action="repaired", stage="repair", reason=note["reason"],
                       shard=note["shard"])


def _committed_state(storage: Storage, ledger: Ledger) -> tuple[dict[str, str], set[str], int]:
    """(sha256 → key, committed keys, next shard number) from what is on storage."""
    repaired = repair_index_parts(storage)
    if repaired:
        log.warning("rebuilt index parts of %d shard(s) committed by a killed run", len(repaired))
    _drop_duplicates(storage, ledger)
    videos, _ = read_index_parts(storage)
    owners = dict(zip(videos["sha256"].to_pylist(), videos["key"].to_pylist()))
    numbers = _shard_numbers(storage)
    return owners, set(videos["key"].to_pylist()), (max(numbers) + 1 if numbers else 0)


def _plan_sources(manifest: Manifest, committed: set[str], ledger: Ledger, summary: IngestSummary) -> list[dict]:
    """Drop what needs no work (bad rows, committed keys, repeated URLs), recording each."""
    for bad in manifest.bad_rows:
        ledger.add(source_index=bad.source_index, url=bad.url, status=STATUS_FAILED, action="failed", stage="manifest",
                   reason=bad.reason)
        summary.add_failure("manifest", bad.reason)
    todo, seen = [], {}
    for row in manifest.iter_rows():
        base = {"source_index": row["source_index"], "url": row["url"]}
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


def _build_dataset(items: list[dict], stages: list[StageSpec], out: str, config: IngestConfig, first_shard: int,
                   registry):
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
        ShardWriteStage, fn_constructor_args=(out, first_shard, registry, config.shards, config.caption),
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
        summary.add_failure(row["stage"], row["reason"])


class IngestError(ValueError):
    """The run cannot start (bad --out); one line for the command line."""


def check_output(out: str) -> Storage:
    """The dataset root, refused before any work when it cannot be one."""
    try:
        storage = Storage.for_uri(out)
    except ValueError as exc:
        raise IngestError(f"--out {out}: {exc}; write a folder or s3://BUCKET/PREFIX") from None
    if not out.startswith("s3://") and os.path.exists(storage.root) and not os.path.isdir(storage.root):
        raise IngestError(f"--out {out} is an existing file, not a dataset folder: name a new or dataset folder")
    return storage


def run_ingest(manifest: str, out: str, config: IngestConfig | None = None, log_stream=sys.stderr) -> IngestSummary:
    config = config or IngestConfig()
    t0 = time.time()
    storage = check_output(out)
    summary = IngestSummary(run_id=new_run_id())
    ledger = Ledger(storage, summary.run_id)
    sources = load_manifest(manifest)
    summary.sources = sources.num_rows
    owners, committed, next_shard = _committed_state(storage, ledger)
    todo = _plan_sources(sources, committed, ledger, summary)
    print(f"[longvid] run {summary.run_id}: {summary.sources} sources, {len(todo)} to process, "
          f"{summary.skipped} already committed → {storage.root}", file=log_stream, flush=True)
    started = connect_ray(config.ray)
    try:
        if todo:
            # restarted with its first arguments if killed: claims made since are lost, never keys
            registry = ContentRegistry.options(max_restarts=-1, max_task_retries=-1).remote(owners, sorted(committed))
            ds = _build_dataset(todo, build_stages(config, registry), out, config, next_shard, registry)
            shards: set[str] = set()
            last_flush = last_progress = time.time()
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for text in batch["ledger"]:
                    _record(json.loads(text), ledger, summary, shards, {})
                fault_point("driver-after-batch")
                now = time.time()
                if now - last_flush > config.ledger_flush_s:
                    ledger.flush()
                    last_flush = now
                if now - last_progress > config.progress_s:
                    done = summary.written + summary.failed + summary.duplicates + summary.skipped
                    print(f"[longvid] {done}/{summary.sources} sources · written {summary.written} · failed {summary.failed}"
                          f" · {summary.video_seconds / 3600:.2f} h · {now - t0:.0f} s", file=log_stream, flush=True)
                    last_progress = now
            summary.shards_written = len(shards)
        _explain_duplicates_of_failures(ledger, summary)
        _drop_duplicates(storage, ledger)
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
            summary.add_failure(first["stage"], first["reason"])


def _clips_written(storage: Storage, ledger: Ledger) -> int:
    from ..shards.index import read_clips_index

    written = {r["video_id"] for r in ledger.rows if r["action"] == "written"}
    if not written:
        return 0
    keys = read_clips_index(storage)["key"].to_pylist()
    return sum(1 for k in keys if k in written)
