"""Ingestion: manifest → fetch → dedup → probe → segment → plan → write, on Ray Data.

The pipeline is the list returned by :func:`build_stages`; each stage is an annotator plus its
resources. Writers commit whole shards, then index parts; a rerun skips what is committed and
retries what failed. Failures are ledger rows, never crashes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, fields

import pyarrow as pa
import pyarrow.compute as pc
import ray

from ..config import check_positive

from ..annotators.base import Stage
from ..annotators.captioners import CaptionerConfig
from .kinds import PipelineConfig
from ..annotators.dedup import Dedup
from ..annotators.fetch import Fetch, FetchConfig
from ..annotators.neardup import NearDuplicateConfig, NearDuplicateIndex, NearDuplicates
from ..annotators.plan import Plan
from ..annotators.probe import Probe
from ..annotators.segment import SegmentConfig
from ..shards.catalog import open_index
from ..shards.compact import update_index
from ..shards.dataset import finalize
from ..shards.faults import fault_point
from ..shards.lease import DatasetLease, LeaseConfig
from ..shards.damaged import set_aside_damaged_shards
from ..shards.ledger import Ledger, new_run_id
from ..shards.schema import STATUS_FAILED, STATUS_OK, video_id_for
from ..shards.repair import drop_content_duplicates, drop_duplicate_keys
from ..shards.storage import Storage
from ..shards.writer import shard_number
from .executors import RayExecutor
from .manifest import Manifest, load_manifest
from .placement import StageOverride
from .segment_parallel import ParallelSegment
from .shard_sink import IngestState, WriteShards

log = logging.getLogger("longvid")


@dataclass
class ShardConfig:
    max_bytes: int = 1 << 30  # 1 GiB: large enough for sequential reads, small enough to retry an upload
    max_videos: int = 64  # videos per shard (and per writer call): bounds what a killed writer loses

    def __post_init__(self):
        check_positive("shards", max_bytes=self.max_bytes, max_videos=self.max_videos)


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
class IngestStagesConfig:
    """Per-stage overrides of what each stage declares (unset: the declaration; see docs/stages.md)."""

    fetch: StageOverride = field(default_factory=StageOverride)  # declared: 0.25 CPU (network-bound)
    dedup: StageOverride = field(default_factory=StageOverride)  # declared: 0.25 CPU (one registry call; fused with fetch)
    probe: StageOverride = field(default_factory=StageOverride)  # declared: 0.25 CPU (a demux in memory; fused with fetch)
    segment: StageOverride = field(default_factory=StageOverride)  # declared: 1 CPU (one decode); num_gpus for TransNetV2
    near_duplicates: StageOverride = field(default_factory=StageOverride)  # declared: 0.1 CPU (one lookup call; fused with plan)
    plan: StageOverride = field(default_factory=StageOverride)  # declared: 0.1 CPU (arithmetic)
    caption_frames: StageOverride = field(default_factory=StageOverride)  # the caption kind's prepare stage: caption.pipeline.prepare_cpus
    caption: StageOverride = field(default_factory=StageOverride)  # the caption kind's model stage: caption.pipeline.num_cpus/num_gpus/pool_size
    write: StageOverride = field(default_factory=StageOverride)  # declared: tasks of 0.5 CPU, batch = shards.max_videos (actors: a fixed pool)

    def by_name(self) -> dict[str, StageOverride]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class RayConfig:
    address: str | None = None  # cluster to join ("auto" inside `ray job submit`); unset: RAY_ADDRESS or a new local Ray
    num_cpus: int | None = None  # logical CPUs of a new local Ray (default: the machine's cores)
    object_store_mb: int = 1024  # object store of a new local Ray; rows carry whole videos
    progress_bars: bool = True  # Ray Data's per-stage progress bars


@dataclass
class IngestCaptionConfig:
    """The caption layer kind after the shards are committed: the same settings as ``longvid
    annotate --captioner`` (``captioner.*``, ``pipeline.*``), see pipelines/ingest_caption.py."""

    enabled: bool = False  # caption every clip once ingested (else run `longvid annotate` later)
    layer: str = "caption"  # annotation layer the captions go to
    version: str = "v1"  # layer version (a later `longvid annotate` run can add v2 beside it)
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # as annotate's: num_gpus auto, prepare stage on


@dataclass
class IngestConfig:
    fetch: FetchConfig = field(default_factory=FetchConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    stages: IngestStagesConfig = field(default_factory=IngestStagesConfig)  # per-stage resources (--stages.segment.num-gpus 0.25)
    ray: RayConfig = field(default_factory=RayConfig)
    caption: IngestCaptionConfig = field(default_factory=IngestCaptionConfig)
    near_duplicates: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    lease: LeaseConfig = field(default_factory=LeaseConfig)  # one writer per dataset (docs/lease.md)
    ledger_flush_s: float = 10.0  # how often the ledger is saved while running (a kill loses at most this)
    progress_s: float = 5.0  # seconds between progress lines


# -- the pipeline, top to bottom ------------------------------------------------------------


def build_stages(config: IngestConfig, out: str) -> list[Stage]:
    """source (the manifest rows) → these stages → the shard sink; run by an executor."""
    stages: list[Stage] = [Fetch(config.fetch), Dedup(), Probe(), ParallelSegment(config.segment)]
    if config.near_duplicates.enabled:
        stages.append(NearDuplicates(config.near_duplicates))
    stages.append(Plan())  # captions (caption.enabled) come after the shards: ingest_caption.caption_dataset
    stages.append(WriteShards(out, config.shards.max_videos, config.shards.max_bytes, config.write.media))
    return stages


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
    quarantined: int = 0  # damaged shards set aside at resume (quarantine/, a ledger row each)
    quarantine_reasons: Counter = field(default_factory=Counter)  # reason class → shards
    wall_s: float = 0.0
    dataset: dict = field(default_factory=dict)
    captions: dict = field(default_factory=dict)  # the caption step's annotate summary (caption.enabled)

    def add_failure(self, stage: str, reason: str) -> None:
        group = f"{stage}: {reason_class(reason)}"
        self.failed += 1
        self.failures[group] += 1
        self.examples.setdefault(group, reason)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["failures"] = dict(self.failures)
        d["quarantine_reasons"] = dict(self.quarantine_reasons)
        return d

    def format(self) -> str:
        rate = self.video_seconds / self.wall_s if self.wall_s else 0.0
        lines = [
            f"run {self.run_id}: {self.sources} sources in {self.wall_s:.1f} s",
            f"  written {self.written} · skipped (already committed) {self.skipped} · duplicates {self.duplicates} · failed {self.failed}",
            f"  ingested {self.video_seconds / 3600:.3f} h of video ({self.video_seconds:.1f} s) · {self.clips} clips · "
            f"{self.shards_written} new shards · {rate:.1f} video-seconds/s",
        ]
        if self.quarantined:
            why = ", ".join(f"{r} ×{n}" for r, n in self.quarantine_reasons.most_common())
            lines.append(f"  {self.quarantined} damaged shard(s) quarantined ({why}); their sources were re-ingested "
                         "where the manifest lists them")
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


def _drop_duplicates(storage: Storage, ledger: Ledger, summary: IngestSummary | None = None) -> None:
    """A key in two shards (a killed writer's retried batch grouped otherwise): keep the lowest.
    Then two keys with the same bytes (a restarted content registry forgot a claim): keep the
    earliest, and this run's row of the other becomes a duplicate. Reads the index's ``key``,
    ``shard`` and ``sha256`` columns only; a changed shard's index is brought up to date."""
    columns = ["key", "shard", "sha256"]
    update_index(storage)
    videos = open_index(storage).videos_dataset().to_table(columns=columns)
    notes = drop_duplicate_keys(storage, videos)
    for note in notes:
        log.warning("shard %s: %s", note["shard"], note["reason"])
        for key in note["keys"]:
            ledger.add(video_id=key, status=STATUS_OK, action="repaired", stage="repair", reason=note["reason"],
                       shard=note["shard"])
    if notes:  # rewritten parts re-read, quarantined shards dropped
        update_index(storage, repair=True, changed=[n["shard"] for n in notes])
        videos = open_index(storage).videos_dataset().to_table(columns=columns)
    notes, duplicate_of = drop_content_duplicates(storage, videos)
    for note in notes:
        log.warning("shard %s: %s", note["shard"], note["reason"])
    if notes:
        _mark_content_duplicates(ledger, duplicate_of, summary)
        update_index(storage, repair=True, changed=[n["shard"] for n in notes])


def _mark_content_duplicates(ledger: Ledger, duplicate_of: dict[str, str], summary: IngestSummary | None) -> None:
    """This run's ``written`` row of a dropped copy becomes a ``duplicate`` row (else one is added)."""
    marked = set()
    for row in ledger.rows:
        first = duplicate_of.get(row.get("video_id") or "")
        if first is not None and row["action"] == "written":
            row.update(action="duplicate", stage="dedup", duplicate_of=first, shard=None,
                       reason=f"same content as {first} (sha256; found by the end-of-run repair)")
            marked.add(row["video_id"])
            if summary is not None:
                summary.written -= 1
                summary.duplicates += 1
                summary.video_seconds -= row.get("duration") or 0.0
    for key in sorted(set(duplicate_of) - marked):  # written by an earlier run
        ledger.add(video_id=key, status=STATUS_OK, action="duplicate", stage="repair", duplicate_of=duplicate_of[key],
                   reason=f"same content as {duplicate_of[key]} (sha256): removed from its shard")


def _committed_state(storage: Storage, ledger: Ledger, manifest_keys: list[str], hashes: bool = False):
    """(sha256 → key of every committed video, the manifest's keys already committed, next shard
    number, the clip index's ``clip_id``/``key``/``phash`` columns when ``hashes`` else None).

    Runs after :func:`_set_aside_damaged` (which rebuilt the parts a killed run left behind and
    brought the shard table up to date), then scans the index's ``key`` and ``sha256`` columns only. The committed check is an
    Arrow ``is_in`` of the manifest's keys against the index keys, so the set it returns is bounded
    by the manifest. The sha256 → key dict is what the shared ``IngestState`` holds: one entry per
    committed video (the next bottleneck at corpus scale; see docs/index.md).
    """
    _drop_duplicates(storage, ledger)
    index = open_index(storage)
    videos = index.videos_dataset().to_table(columns=["key", "sha256"])
    owners = dict(zip(videos["sha256"].to_pylist(), videos["key"].to_pylist()))
    wanted = pa.array(manifest_keys, pa.string())
    committed = set(wanted.filter(pc.is_in(wanted, value_set=videos["key"].combine_chunks())).to_pylist())
    numbers = _shard_numbers(storage)
    clips = index.clips_dataset().to_table(columns=["clip_id", "key", "phash"]) if hashes else None
    return owners, committed, (max(numbers) + 1 if numbers else 0), clips


def _set_aside_damaged(storage: Storage, ledger: Ledger, summary: "IngestSummary") -> None:
    """Damaged shards go to ``quarantine/`` with a ledger row each (stage ``repair``), their index
    rows dropped, so their sources count as not committed and are ingested again (damaged.py)."""
    _, notes = set_aside_damaged_shards(storage)
    for note in notes:
        ledger.add(video_id=None, status=STATUS_FAILED, action="quarantined", stage="repair", reason=note["reason"],
                   shard=note["shard"])
        for key in note["keys"]:
            ledger.add(video_id=key, status=STATUS_FAILED, action="quarantined", stage="repair",
                       reason=note["reason"], shard=note["shard"])
    summary.quarantined += len(notes)
    summary.quarantine_reasons.update(n["reason_class"] for n in notes)


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
    config.write.check()  # settings first: a bad one fails before any input is read
    t0 = time.time()
    storage = check_output(out)
    summary = IngestSummary(run_id=new_run_id())
    sources = load_manifest(manifest)
    with DatasetLease(storage, summary.run_id, "ingest", config.lease) as lease:  # before any write
        return _ingest(storage, sources, out, config, summary, lease, t0, log_stream)


def _ingest(storage: Storage, sources: Manifest, out: str, config: IngestConfig, summary: IngestSummary,
            lease: DatasetLease, t0: float, log_stream) -> IngestSummary:
    ledger = Ledger(storage, summary.run_id)
    if lease.takeover_note():
        ledger.add(status=STATUS_OK, action="lease_takeover", stage="lease", reason=lease.takeover_note())
        print(f"[longvid] {lease.takeover_note()}", file=log_stream, flush=True)
    summary.sources = sources.num_rows
    manifest_keys = [video_id_for(u) for u in sources.table()["url"].to_pylist() if u]
    _set_aside_damaged(storage, ledger, summary)
    owners, committed, next_shard, clips = _committed_state(storage, ledger, manifest_keys,
                                                            config.near_duplicates.enabled)
    todo = _plan_sources(sources, committed, ledger, summary)
    print(f"[longvid] run {summary.run_id}: {summary.sources} sources, {len(todo)} to process, "
          f"{summary.skipped} already committed → {storage.root}", file=log_stream, flush=True)
    started = connect_ray(config.ray)
    try:
        if todo:
            ray.data.DataContext.get_current().enable_progress_bars = config.ray.progress_bars
            state = IngestState(owners, sorted(committed), next_shard)
            shared = {"ingest": state, "content": state}
            if config.near_duplicates.enabled:  # earlier runs' clips, so a later run finds their copies
                shared["hashes"] = NearDuplicateIndex.from_clip_index(clips, config.near_duplicates.radius)
            executor = RayExecutor(build_stages(config, out), config.stages.by_name(), shared=shared)
            shards: set[str] = set()
            last_flush = last_progress = time.time()
            for row in executor.run(todo):
                _record(row, ledger, summary, shards, {})
                lease.check()  # taken over by another run (ours went stale): stop writing
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
            executor.close()
            summary.shards_written = len(shards)
        _explain_duplicates_of_failures(ledger, summary)
        lease.check()  # the end-of-run repair rewrites shards: only while the dataset is still ours
        _drop_duplicates(storage, ledger, summary)
        ledger.flush()
        summary.dataset = finalize(storage)
        summary.clips = _clips_written(storage, ledger)
        if config.caption.enabled:  # the caption layer kind over the committed shards, on this Ray
            from .ingest_caption import caption_dataset

            summary.captions = caption_dataset(out, config, lambda line: print(f"[longvid] {line}", file=log_stream))
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
    """Clip rows of the videos this run wrote (an Arrow count over the ``key`` column)."""
    written = sorted({r["video_id"] for r in ledger.rows if r["action"] == "written"})
    if not written:
        return 0
    clips = open_index(storage).clips_dataset()
    return clips.count_rows(filter=pc.field("key").isin(pa.array(written, pa.string())))
