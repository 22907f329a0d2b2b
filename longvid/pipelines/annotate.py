"""Re-annotation of an existing dataset: a new version of a layer (clip captions, or a summary
and QA written from a caption layer) under ``annotations/<layer>/<version>/``.

Reads video bytes with ranged reads located by the index and never writes under ``videos/``.
Work is cut into deterministic parts, so a killed run resumes by skipping committed parts;
per-item failures go to the layer version's own ledger and the run goes on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..annotators.captioners import CaptionerConfig
from ..annotators.writers import WriterConfig
from ..shards.dataset import read_dataset_json
import pyarrow as pa
import pyarrow.compute as pc

from ..shards.catalog import DatasetIndex, open_index
from ..shards.index import read_videos_index
from ..shards.layers import layer_dir, layer_parts, read_layer, write_layer_meta, write_layer_part
from ..shards.ledger import Ledger, new_run_id
from ..shards.storage import Storage
from ..shards.validate import mark_bad_video_rows
from .annotate_stages import CaptionClips, CaptionVideosInline, PrepareClipFrames, WriteSummaries
from .executors import RayExecutor
from .ingest import RayConfig, connect_ray
from .placement import StageOverride


@dataclass
class PipelineConfig:
    prepare_stage: bool = True  # decode+resize in CPU tasks that feed the model (off: the model worker decodes inline and waits)
    prepare_cpus: float = 1.0  # CPUs per preparation task: one decode per video
    num_gpus: float = 1.0  # per model actor (= tensor_parallel_size for vLLM); 0 runs the model on CPU
    num_cpus: float = 1.0  # per model actor: the engine's own CPU work (tokenising, scheduling)
    pool_size: int = 1  # model actors, one engine each: usually one per GPU
    batch_size: int = 32  # clips (captioner) or videos (writer) per model call: big enough for vLLM to batch well
    videos_per_part: int = 64  # videos per layer part: the most a kill can lose, and a bound on file count
    max_restarts: int = 2  # times a crashed model actor is restarted (out of memory, driver hiccup)


@dataclass
class AnnotateStagesConfig:
    """Per-stage overrides (unset: what pipeline.* declares); e.g. --stages.caption.num-gpus 0."""

    prepare: StageOverride = field(default_factory=StageOverride)  # declared: pipeline.prepare_cpus
    caption: StageOverride = field(default_factory=StageOverride)  # declared: pipeline.num_cpus/num_gpus/pool_size/batch_size
    write: StageOverride = field(default_factory=StageOverride)  # the summary/QA writer; declared as caption

    def by_name(self) -> dict[str, StageOverride]:
        return {"prepare": self.prepare, "caption": self.caption, "write": self.write}


@dataclass
class AnnotateConfig:
    layer: str = "caption"  # layer name: annotations/<layer>/<version>/
    version: str = ""  # layer version tag (required); a new captioner or prompt gets a new version
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)  # set captioner.model.model to caption clips
    writer: WriterConfig = field(default_factory=WriterConfig)  # or set writer.model.model to write summary + QA
    source_layer: str = ""  # writer input: LAYER/VERSION of clip captions (e.g. caption/v1)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    ray: RayConfig = field(default_factory=RayConfig)  # which Ray to join or start (as for ingest)
    stages: AnnotateStagesConfig = field(default_factory=AnnotateStagesConfig)  # per-stage resources
    limit_videos: int = 0  # annotate only the first N videos (trials); 0 = all


class AnnotateError(ValueError):
    pass


def task_of(config: AnnotateConfig) -> str:
    has_captioner, has_writer = bool(config.captioner.model.model), bool(config.writer.model.model)
    if has_captioner == has_writer:
        raise AnnotateError("give exactly one model: --captioner MODEL (clip captions) or --writer MODEL "
                            "with --source-layer LAYER/VERSION (summary and QA)")
    if has_writer and "/" not in config.source_layer:
        raise AnnotateError("--writer needs --source-layer LAYER/VERSION (the clip captions to read)")
    if not config.version:
        raise AnnotateError("--version is required (for example v1, or 2025-06-smolvlm2)")
    if config.pipeline.batch_size < 1 or config.pipeline.pool_size < 1 or config.pipeline.videos_per_part < 1:
        raise AnnotateError("pipeline.batch_size, pool_size and videos_per_part must be >= 1")
    return "write" if has_writer else "caption"


# -- planning ------------------------------------------------------------------------------------
def video_table(storage: Storage):
    """Every video row (small datasets, benchmarks): planning itself goes per shard (``plan_todo``)."""
    return read_videos_index(storage)


def plan_parts(videos: list[dict], videos_per_part: int) -> dict[str, list[dict]]:
    """Deterministic parts: per video shard, its videos in byte order, ``videos_per_part`` at a time.

    A part's name comes from its shard and position only, so a rerun over the same index finds the
    same parts, and videos added later in new shards land in new parts.
    """
    by_shard: dict[str, list[dict]] = {}
    for v in sorted(videos, key=lambda v: (v["shard"], v["media_offset"])):
        by_shard.setdefault(v["shard"], []).append(v)
    parts = {}
    for shard, rows in by_shard.items():
        base = shard.rsplit("/", 1)[-1][: -len(".tar")]
        for i in range(0, len(rows), videos_per_part):
            parts[f"{base}-{i // videos_per_part:04d}"] = rows[i : i + videos_per_part]
    return parts


def part_names(shards: pa.Table, videos_per_part: int, limit_videos: int = 0) -> tuple[dict[str, str], dict[str, int]]:
    """(part name → shard, shard → videos planned) from the shard table's ``ok_videos`` alone: the
    names ``plan_parts`` gives (same shard order and positions) without reading a video row.
    ``limit_videos`` keeps the first that many ok videos in (shard, byte) order."""
    names: dict[str, str] = {}
    planned: dict[str, int] = {}
    left = limit_videos or None
    for shard, count in zip(shards["shard"].to_pylist(), shards["ok_videos"].to_pylist()):  # O(shards)
        if left is not None:
            count = min(count, left)
            left -= count
        planned[shard] = count
        base = shard.rsplit("/", 1)[-1][: -len(".tar")]
        for i in range(-(-count // videos_per_part)):
            names[f"{base}-{i:04d}"] = shard
        if left == 0:
            break
    return names, planned


def plan_todo(index: DatasetIndex, names: dict[str, str], planned: dict[str, int], done: set[str],
              videos_per_part: int) -> dict[str, list[dict]]:
    """The parts still to do with their video rows: rows are read only for shards that have such a
    part, one index file at a time (a finished shard costs nothing)."""
    todo_shards = sorted({shard for name, shard in names.items() if name not in done})
    if not todo_shards:
        return {}
    table = index.shards.filter(pc.is_in(index.shards["shard"], pa.array(todo_shards, pa.string())))
    todo: dict[str, list[dict]] = {}
    for path in pc.unique(table["videos_file"]).to_pylist():
        shards = table.filter(pc.equal(table["videos_file"], path))["shard"].to_pylist()
        rows_of_file = index.read_videos(shards, filter=pc.field("status") == "ok")  # one file's shards
        rows_of_file = mark_bad_video_rows(rows_of_file, index.shards)  # a hostile row fails alone (validate.py)
        for shard in shards:
            rows = rows_of_file.filter(pc.equal(rows_of_file["shard"], shard))
            rows = rows.sort_by("media_offset").slice(0, planned[shard]).to_pylist()  # one shard's rows
            for name, part_rows in plan_parts(rows, videos_per_part).items():
                if name not in done:
                    todo[name] = part_rows
    return todo


def run_recipe(config: AnnotateConfig, task: str, producer: dict) -> dict:
    """What must not change between a run and its resumption (else the parts would not match)."""
    from ..annotators.captioners import producer_id

    return {"task": task, "producer_id": producer_id(producer), "videos_per_part": config.pipeline.videos_per_part,
            "source_layer": config.source_layer if task == "write" else ""}


def check_resume(storage: Storage, config: AnnotateConfig, recipe: dict) -> bool:
    """True when this layer version already has a run; refuse one with a different recipe."""
    path = f"{layer_dir(config.layer, config.version)}/layer.json"
    if not storage.exists(path):
        return False
    old = json.loads(storage.read_bytes(path)).get("recipe")
    if old != recipe:
        raise AnnotateError(
            f"{config.layer}/{config.version} was made with a different recipe ({old}); this run's is {recipe}. "
            "A new captioner, prompt or parameters need a new --version.")
    return True


# -- the run ---------------------------------------------------------------------------------------
class PartTracker:
    """Collects model results per part (driver side) and says when a part is whole."""

    def __init__(self, parts: dict[str, list[dict]]):
        self.videos = {v["key"]: v for rows in parts.values() for v in rows}
        self.pending = {name: {v["key"] for v in rows} for name, rows in parts.items()}
        self.received: dict[str, list[dict]] = {}  # key -> results

    def add(self, part: str, key: str, result: dict) -> bool:
        """Record one result; True when this completes ``part``."""
        got = self.received.setdefault(key, [])
        got.append(result)
        if len(got) >= result["expected"]:
            self.pending[part].discard(key)
        return not self.pending[part]

    def take(self, part: str, keys: list[str]) -> dict[str, list[dict]]:
        del self.pending[part]
        return {k: self.received.pop(k, []) for k in keys}


def commit_part(storage: Storage, config: AnnotateConfig, ledger: Ledger, part: str, videos: list[dict],
                results: dict[str, list[dict]], stage: str) -> dict:
    """Write one part (rows of every video in it), then its ledger rows; returns counts."""
    rows, counts = [], {"videos": 0, "failed_videos": 0, "rows": 0, "failures": 0, "tokens": 0}
    for video in videos:
        got = results.get(video["key"], [])
        video_rows = [r for res in got for r in res["rows"]]
        failures = [f for res in got for f in res["failures"]]
        counts["tokens"] += sum(res.get("num_tokens", 0) for res in got)
        rows.extend(video_rows)
        ok = bool(video_rows)
        counts["videos"] += 1
        counts["failed_videos"] += 0 if ok else 1
        counts["rows"] += len(video_rows)
        counts["failures"] += len(failures)
        reason = f"{len(failures)} item(s) failed or rejected" if failures and ok else None
        if not ok:
            reason = failures[0]["reason"] if failures else "nothing produced"
        ledger.add(video_id=video["key"], url=video.get("url"), shard=video["shard"], duration=video.get("duration"),
                   status="ok" if ok else "failed", action="written" if ok else "failed",
                   stage=stage if ok else (failures[0]["stage"] if failures else stage), reason=reason)
        for f in failures if ok else failures[1:]:
            where = f"clip {f['clip_id']}: " if f.get("clip_id") else ""
            ledger.add(video_id=video["key"], url=video.get("url"), shard=video["shard"], status="failed",
                       action="failed", stage=f["stage"], reason=where + f["reason"])
    rows.sort(key=lambda r: (r["key"], r["start"], r["clip_id"] or "", r["value"]))
    write_layer_part(storage, config.layer, config.version, part, rows)
    ledger.flush()  # after the part: a part on storage is the commit, the ledger only reports it
    return counts


def build_stages(storage: Storage, config: AnnotateConfig, task: str) -> list:
    """The pipeline, top to bottom: (prepare →) model; each stage yields result items {part, key, result}."""
    p = config.pipeline
    model = dict(num_cpus=p.num_cpus, num_gpus=p.num_gpus, actors=p.pool_size, batch_size=p.batch_size)
    if task == "write":  # items carry their timeline (attach_timelines): no video bytes are read
        return [WriteSummaries(config.writer, **model)]
    if not p.prepare_stage:
        return [CaptionVideosInline(storage, config.captioner, **model)]
    return [PrepareClipFrames(storage, config.captioner, p.prepare_cpus), CaptionClips(config.captioner, **model)]


def run_pipeline(storage: Storage, config: AnnotateConfig, task: str, parts: dict[str, list[dict]]):
    """yields the result items of ``parts``' videos, from the stages on Ray (after the resource check)"""
    items = [dict(v, part=name) for name, rows in parts.items() for v in rows]
    executor = RayExecutor(build_stages(storage, config, task), config.stages.by_name(),
                           max_restarts=config.pipeline.max_restarts)
    try:
        yield from executor.run(items)
    finally:
        executor.close()


def result_of(out: dict) -> dict:
    """A result item's result; a dropped item (a stage's batch-wide error) becomes a failure."""
    if "dropped" not in out:
        return json.loads(out["result"])
    meta = json.loads(out["meta"]) if "meta" in out else {"expected": 1, "clip_id": None}
    reason = out["dropped"]["reason"]
    return {"expected": meta["expected"], "rows": [], "num_tokens": 0,
            "failures": [{"stage": out["dropped"]["stage"], "clip_id": meta.get("clip_id"), "reason": reason}]}


def producer_for(config: AnnotateConfig, task: str) -> dict:
    if task == "write":
        from ..annotators.writers import VideoWriter

        return VideoWriter(config.writer).producer()  # the source layer is in the recipe
    from ..annotators.captioners import Captioner

    return Captioner(config.captioner).producer()


def attach_timelines(storage: Storage, source_layer: str, videos: list[dict]) -> list[dict]:
    """Each video with its clip captions from ``source_layer`` as JSON (``timeline``)."""
    layer, version = source_layer.split("/", 1)
    table = read_layer(storage, layer, version)
    by_key: dict[str, list[list]] = {}
    for row in table.select(["key", "clip_id", "start", "end", "value"]).to_pylist():
        if row["clip_id"] is not None:
            by_key.setdefault(row["key"], []).append([row["clip_id"], row["start"], row["end"], row["value"]])
    return [dict(v, timeline=json.dumps(by_key.get(v["key"], []))) for v in videos]


def update_dataset_layers(storage: Storage) -> dict:
    """Refresh ``dataset.json``'s layer list only (the index and counts are the ingest's business)."""
    from ..shards.dataset import DATASET_JSON, list_layers

    meta = read_dataset_json(storage)
    meta["layers"] = list_layers(storage)
    meta["updated"] = time.time()
    storage.write_bytes(DATASET_JSON, json.dumps(meta, indent=2, sort_keys=True).encode())
    return meta


def layer_counts(storage: Storage, config: AnnotateConfig) -> dict:
    table = read_layer(storage, config.layer, config.version)
    return {"rows": table.num_rows, "videos": len(set(table["key"].to_pylist())), "parts": len(layer_parts(
        storage, config.layer, config.version))}


def run_annotate(dataset: str, config: AnnotateConfig, log=print) -> dict:
    """Annotate ``dataset`` into ``config.layer``/``config.version``; returns the run's summary."""
    import ray

    task = task_of(config)
    storage = Storage.for_uri(dataset)
    read_dataset_json(storage)  # refuse what is not a dataset (or is newer than this code)
    producer = producer_for(config, task)
    recipe = run_recipe(config, task, producer)
    resumed = check_resume(storage, config, recipe)
    index = open_index(storage)
    vpp = config.pipeline.videos_per_part
    parts, planned = part_names(index.shards, vpp, config.limit_videos)
    done = {p.rsplit("/", 1)[-1][: -len(".parquet")] for p in layer_parts(storage, config.layer, config.version)}
    todo = plan_todo(index, parts, planned, done, vpp)
    if task == "write" and todo:  # one read of the source layer for every part to do
        attached = iter(attach_timelines(storage, config.source_layer, [v for rows in todo.values() for v in rows]))
        todo = {name: [next(attached) for _ in rows] for name, rows in todo.items()}
    num_videos = sum(planned.values())
    base = layer_dir(config.layer, config.version)
    meta = {"producer": producer, "producer_id": recipe["producer_id"], "recipe": recipe}
    write_layer_meta(storage, config.layer, config.version, dict(meta, status="in_progress"))
    run_id = new_run_id()
    ledger = Ledger(storage, run_id, directory=f"{base}/ledger")
    for name in sorted(set(parts) - set(todo)):  # one row per committed part (not per video: O(parts))
        ledger.add(video_id="", url=None, shard=parts[name], status="ok", action="skipped",
                   stage=task, reason="already committed in part " + name)
    log(f"annotate {config.layer}/{config.version} ({task}): {num_videos} videos in {len(parts)} parts, "
        f"{len(parts) - len(todo)} already committed{' (resumed)' if resumed else ''}")
    totals = {"videos": 0, "failed_videos": 0, "rows": 0, "failures": 0, "tokens": 0}
    started = time.time()
    ray_started = connect_ray(config.ray) if todo else False
    try:
        if todo:
            totals = _run_parts(storage, config, task, todo, ledger, log)
    finally:
        if ray_started:
            ray.shutdown()
    ledger.flush()
    elapsed = time.time() - started
    counts = layer_counts(storage, config) if layer_parts(storage, config.layer, config.version) else {}
    write_layer_meta(storage, config.layer, config.version, dict(meta, status="complete", counts=counts))
    update_dataset_layers(storage)
    summary = dict(totals, layer=config.layer, version=config.version, task=task, run_id=run_id, seconds=elapsed,
                   parts=len(parts), parts_skipped=len(parts) - len(todo), producer_id=recipe["producer_id"])
    log(json.dumps(summary, sort_keys=True))
    return summary


def _run_parts(storage: Storage, config: AnnotateConfig, task: str, todo: dict[str, list[dict]], ledger: Ledger,
               log) -> dict:
    """Stream the model's results and commit each part as soon as its last video is in."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = config.ray.progress_bars
    totals = {"videos": 0, "failed_videos": 0, "rows": 0, "failures": 0, "tokens": 0}
    tracker = PartTracker(todo)
    stage = "caption" if task == "caption" else "write"
    for out in run_pipeline(storage, config, task, todo):
        result = result_of(out)
        if tracker.add(out["part"], out["key"], result):
            keys = [v["key"] for v in todo[out["part"]]]
            counts = commit_part(storage, config, ledger, out["part"], todo[out["part"]],
                                 tracker.take(out["part"], keys), stage)
            for k in totals:
                totals[k] += counts[k]
            log(f"  part {out['part']}: {counts['rows']} rows, {counts['failures']} failures")
    if tracker.pending:
        raise RuntimeError(f"the pipeline ended with parts unfinished: {sorted(tracker.pending)}")
    return totals

