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
from ..shards.index import VIDEOS_INDEX, read_index_parts, read_videos_index
from ..shards.layers import (layer_dir, layer_parts, read_failures, read_layer, read_layer_part, version_status,
                             write_failures_part, write_layer_meta, write_layer_part)
from ..shards.ledger import Ledger, new_run_id
from ..shards.storage import Storage
from .annotate_stages import CaptionActor, InlineCaptionActor, WriterActor, prepare_videos
from .ingest import RayConfig, connect_ray


@dataclass
class PipelineConfig:
    prepare_stage: bool = True  # decode+resize in CPU tasks that feed the model (off: the model worker decodes inline and waits)
    prepare_cpus: float = 1.0  # CPUs per preparation task: one decode per video
    num_gpus: float = -1.0  # per model actor; -1 (auto): tensor_parallel_size GPUs where the cluster has GPUs, else 0 (CPU)
    num_cpus: float = 1.0  # per model actor: the engine's own CPU work (tokenising, scheduling)
    pool_size: int = 1  # model actors, one engine each: usually one per GPU
    batch_size: int = 32  # clips (captioner) or videos (writer) per model call: big enough for vLLM to batch well
    videos_per_part: int = 64  # videos per layer part: the most a kill can lose, and a bound on file count
    max_restarts: int = 2  # times a crashed model actor is restarted (out of memory, driver hiccup)
    check_resources: bool = True  # refuse requests the cluster cannot meet (Ray would wait forever); off for autoscaling clusters


@dataclass
class AnnotateConfig:
    layer: str = "caption"  # layer name: annotations/<layer>/<version>/
    version: str = ""  # layer version tag (required); a new captioner or prompt gets a new version
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)  # set captioner.model.model to caption clips
    writer: WriterConfig = field(default_factory=WriterConfig)  # or set writer.model.model to write summary + QA
    source_layer: str = ""  # writer input: LAYER/VERSION of clip captions (e.g. caption/v1)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    ray: RayConfig = field(default_factory=RayConfig)  # which Ray to join or start (as for ingest)
    limit_videos: int = 0  # annotate only the first N videos (trials); 0 = all
    retry_failed: bool = False  # re-run only the failed items of this (existing) version and rewrite their parts


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
    """The videos index (consolidated, or the parts when consolidation has not run yet)."""
    if storage.exists(VIDEOS_INDEX):
        return read_videos_index(storage)
    return read_index_parts(storage)[0]


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


# -- resources: what the stages ask for against what the cluster has -------------------------------
def model_of(config: AnnotateConfig, task: str):
    return config.writer.model if task == "write" else config.captioner.model


def fit_resources(config: AnnotateConfig, task: str, cluster: dict, log) -> None:
    """Resolve ``num_gpus: -1`` (auto) and refuse, in one line naming the setting, what Ray could
    never schedule (it would not fail: it waits for a node that does not exist)."""
    p = config.pipeline
    gpus, cpus = float(cluster.get("GPU", 0)), float(cluster.get("CPU", 0))
    if p.num_gpus < 0:
        if gpus >= 1:
            p.num_gpus = float(max(1, model_of(config, task).tensor_parallel_size))
        else:
            p.num_gpus = 0.0
            log("note: the Ray cluster has no GPU: the model runs on CPU (set --pipeline.num-gpus N to ask for GPUs)")
    if not p.check_resources:
        return
    if p.num_gpus * p.pool_size > gpus:
        raise AnnotateError(f"{p.pool_size} model actor(s) x {p.num_gpus:g} GPU exceed the cluster's {gpus:g} GPU(s): "
                            "set --pipeline.num-gpus 0 to run on CPU, lower --pipeline.pool-size, or join a cluster "
                            "with GPUs (--ray.address)")
    prepare = p.prepare_cpus if task == "caption" and p.prepare_stage else 0.0
    if p.num_cpus * p.pool_size + prepare > cpus:
        raise AnnotateError(f"{p.pool_size} model actor(s) x {p.num_cpus:g} CPU{f' + {prepare:g} for preparation' if prepare else ''} "
                            f"exceed the cluster's {cpus:g} CPU(s): lower --pipeline.num-cpus / --pipeline.prepare-cpus / "
                            "--pipeline.pool-size, or raise --ray.num-cpus")


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


def _merge_previous(storage: Storage, config: AnnotateConfig, part: str, retried: dict[str, list | None],
                    rows: list[dict], failures: list[dict]) -> tuple[list[dict], list[dict]]:
    """A retry's part: the old rows and failures minus the retried items, plus the new ones.
    ``retried``: key → the clip ids retried (None: the whole video)."""
    def redone(key, clip_id) -> bool:
        clips = retried.get(key, ())
        return clips is None or clip_id in clips

    old_rows = [r for r in read_layer_part(storage, config.layer, config.version, part).to_pylist()
                if not redone(r["key"], r["clip_id"])]
    old_failures = [f for f in read_failures(storage, config.layer, config.version, part).to_pylist()
                    if not (redone(f["key"], f["clip_id"]) and f["retry"])]
    return old_rows + rows, old_failures + failures


def commit_part(storage: Storage, config: AnnotateConfig, ledger: Ledger, part: str, videos: list[dict],
                results: dict[str, list[dict]], stage: str, retried: dict[str, list | None] | None = None) -> dict:
    """Write one part (rows of every video in it), then its failures, then its ledger rows;
    returns counts. ``retried``: a retry's items, merged into the part already on storage."""
    rows, failure_rows = [], []
    counts = {"videos": 0, "failed_videos": 0, "rows": 0, "failures": 0, "tokens": 0}
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
        for f in failures:  # a clip that got no caption, or a video that got nothing, may be retried
            failure_rows.append({"key": video["key"], "clip_id": f.get("clip_id"), "stage": f["stage"],
                                 "reason": f["reason"], "retry": (not ok) or (stage == "caption" and bool(f.get("clip_id")))})
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
    if retried is not None:
        rows, failure_rows = _merge_previous(storage, config, part, retried, rows, failure_rows)
    rows.sort(key=lambda r: (r["key"], r["start"], r["clip_id"] or "", r["value"]))
    write_layer_part(storage, config.layer, config.version, part, rows)
    # after the part: a part without its failures file reads as "no failures", and a retry that
    # stops between the two writes redoes items the part already has (merged again, not doubled)
    write_failures_part(storage, config.layer, config.version, part, failure_rows)
    ledger.flush()  # after the part: a part on storage is the commit, the ledger only reports it
    return counts


def retry_plan(storage: Storage, config: AnnotateConfig, parts: dict[str, list[dict]], task: str):
    """The committed parts that hold retryable failures, each with only those videos (carrying
    ``retry_clips``: the clip ids to redo, or none for the whole video); and key → clip ids."""
    import pyarrow.compute as pc

    failed = read_failures(storage, config.layer, config.version)
    failed = failed.filter(pc.field("retry")).select(["key", "clip_id"]).to_pylist()  # bounded: failures only
    retried: dict[str, list | None] = {}
    for f in failed:
        if task == "write" or f["clip_id"] is None:
            retried[f["key"]] = None
        elif retried.get(f["key"], []) is not None:
            retried.setdefault(f["key"], []).append(f["clip_id"])
    todo = {}
    for name, videos in parts.items():
        chosen = [dict(v, retry_clips=json.dumps(retried[v["key"]])) for v in videos if v["key"] in retried]
        if chosen:
            todo[name] = chosen
    return todo, retried


def build_dataset(storage: Storage, config: AnnotateConfig, task: str, parts: dict[str, list[dict]]):
    """The Ray Data graph: (prepare →) model actor pool; yields result rows {part, key, result}."""
    import ray

    p = config.pipeline
    items = [dict(v, part=name) for name, rows in parts.items() for v in rows]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 1000)))
    actor_args = dict(compute=ray.data.ActorPoolStrategy(size=p.pool_size), num_gpus=p.num_gpus,
                      num_cpus=p.num_cpus, max_restarts=p.max_restarts, max_task_retries=p.max_restarts)
    if task == "write":  # items carry their timeline (attach_timelines): no video bytes are read
        return ds.map_batches(WriterActor, fn_constructor_kwargs={"config": config.writer},
                              batch_size=p.batch_size, **actor_args)
    if not p.prepare_stage:
        return ds.map_batches(InlineCaptionActor, fn_constructor_kwargs={"config": config.captioner, "storage": storage,
                                                                         "batch_size": p.batch_size},
                              batch_size=1, **actor_args)
    # yields one row per clip: {part, key, meta (JSON: clip span, expected count, error), frames (bytes)}
    ds = ds.map_batches(prepare_videos, fn_kwargs={"storage": storage, "config": config.captioner},
                        batch_size=1, num_cpus=p.prepare_cpus)
    # yields one row per clip: {part, key, result (JSON: layer rows, failures, tokens, expected)}
    return ds.map_batches(CaptionActor, fn_constructor_kwargs={"config": config.captioner},
                          batch_size=p.batch_size, **actor_args)


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


def run_annotate(dataset: str, config: AnnotateConfig, log=print) -> dict:
    """Annotate ``dataset`` into ``config.layer``/``config.version``; returns the run's summary."""
    import ray

    task = task_of(config)
    from ..annotators.captioners.engine import resolve_backend

    if task == "write":
        config.writer.model = resolve_backend(config.writer.model, note=lambda m: log("note: " + m))
    else:
        config.captioner.model = resolve_backend(config.captioner.model, note=lambda m: log("note: " + m))
    storage = Storage.for_uri(dataset)
    read_dataset_json(storage)  # refuse what is not a dataset (or is newer than this code)
    producer = producer_for(config, task)
    recipe = run_recipe(config, task, producer)
    resumed = check_resume(storage, config, recipe)
    table = video_table(storage)
    videos = [v for v in table.to_pylist() if v["status"] == "ok"]
    if config.limit_videos:
        videos = sorted(videos, key=lambda v: (v["shard"], v["media_offset"]))[: config.limit_videos]
    if task == "write":
        videos = attach_timelines(storage, config.source_layer, videos)
    parts = plan_parts(videos, config.pipeline.videos_per_part)
    done = {p.rsplit("/", 1)[-1][: -len(".parquet")] for p in layer_parts(storage, config.layer, config.version)}
    todo = {name: rows for name, rows in parts.items() if name not in done}
    retried = None
    if config.retry_failed:
        if not resumed:
            raise AnnotateError(f"--retry-failed: {config.layer}/{config.version} has no run to retry; "
                                "run it first without --retry-failed")
        if todo:
            raise AnnotateError(f"--retry-failed: {config.layer}/{config.version} has {len(todo)} parts not yet "
                                "committed; finish the run first (the same command without --retry-failed)")
        todo, retried = retry_plan(storage, config, {n: parts[n] for n in sorted(done & set(parts))}, task)
    base = layer_dir(config.layer, config.version)
    meta = {"producer": producer, "producer_id": recipe["producer_id"], "recipe": recipe}
    write_layer_meta(storage, config.layer, config.version, dict(meta, status="in_progress"))
    run_id = new_run_id()
    ledger = Ledger(storage, run_id, directory=f"{base}/ledger")
    for name in sorted(set(parts) - set(todo)) if retried is None else ():
        for v in parts[name]:
            ledger.add(video_id=v["key"], url=v.get("url"), shard=v["shard"], status="ok", action="skipped",
                       stage=task, reason="already committed in part " + name)
    if retried is not None:
        log(f"annotate {config.layer}/{config.version} ({task}): retrying the failed items of "
            f"{sum(len(v) for v in todo.values())} videos in {len(todo)} parts")
    else:
        log(f"annotate {config.layer}/{config.version} ({task}): {len(videos)} videos in {len(parts)} parts, "
            f"{len(parts) - len(todo)} already committed{' (resumed)' if resumed else ''}")
    totals = {"videos": 0, "failed_videos": 0, "rows": 0, "failures": 0, "tokens": 0}
    started = time.time()
    ray_started = connect_ray(config.ray) if todo else False
    try:
        if todo:
            fit_resources(config, task, ray.cluster_resources(), log)
            totals = _run_parts(storage, config, task, todo, ledger, log, retried)
    finally:
        if ray_started:
            ray.shutdown()
    ledger.flush()
    elapsed = time.time() - started
    counts = version_status(storage, config.layer, config.version, planned_parts=len(parts))
    write_layer_meta(storage, config.layer, config.version, dict(meta, status=counts["status"], counts=counts))
    update_dataset_layers(storage)
    summary = dict(totals, layer=config.layer, version=config.version, task=task, run_id=run_id, seconds=elapsed,
                   parts=len(parts), parts_skipped=len(parts) - len(todo), producer_id=recipe["producer_id"],
                   status=counts["status"], retried_parts=len(todo) if retried is not None else 0)
    log(json.dumps(summary, sort_keys=True))
    return summary


def _run_parts(storage: Storage, config: AnnotateConfig, task: str, todo: dict[str, list[dict]], ledger: Ledger,
               log, retried: dict | None = None) -> dict:
    """Stream the model's results and commit each part as soon as its last video is in."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = config.ray.progress_bars
    totals = {"videos": 0, "failed_videos": 0, "rows": 0, "failures": 0, "tokens": 0}
    tracker = PartTracker(todo)
    stage = "caption" if task == "caption" else "write"
    for out in build_dataset(storage, config, task, todo).iter_rows():
        result = json.loads(out["result"])
        if tracker.add(out["part"], out["key"], result):
            keys = [v["key"] for v in todo[out["part"]]]
            counts = commit_part(storage, config, ledger, out["part"], todo[out["part"]],
                                 tracker.take(out["part"], keys), stage, retried)
            for k in totals:
                totals[k] += counts[k]
            log(f"  part {out['part']}: {counts['rows']} rows, {counts['failures']} failures")
    if tracker.pending:
        raise RuntimeError(f"the pipeline ended with parts unfinished: {sorted(tracker.pending)}")
    return totals

