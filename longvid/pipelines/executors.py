"""Two executors of one stage list: :class:`LocalExecutor` (this process: tests, small jobs) and
:class:`RayExecutor` (the Ray Data adapter every pipeline uses), with the same results.

Both do the contract's bookkeeping so no stage has to: a dropped item is marked
``item["dropped"] = {stage, reason, action, ...}`` and rides along untouched to the sink (the
stage that ``receives_dropped``, which writes the ledger); every kept item's ``producers`` map
gets ``stage name → stage@version``. Between Ray stages a row is ``{"item": JSON, "media":
bytes | None}``: nothing but data crosses process boundaries. State a stage shares across workers
(a registry, a counter) is owned by the executor: a plain object here, one actor on Ray, reached
through the same method names (``stage.shared[name].method(...)``).
"""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import replace
from typing import Iterable, Iterator

from ..annotators.base import Dropped, ItemFailed, Stage
from .placement import ClusterShape, Placement, StageOverride, fit_to_cluster, place

log = logging.getLogger("longvid")

ROWS_PER_BLOCK = 8  # rows per output block of a fan-out: small blocks keep a long video's clips from piling up


def encode_row(item: dict) -> dict:
    media = item.pop("media", None)
    return {"item": json.dumps(item, separators=(",", ":")), "media": media}


def decode_row(row: dict) -> dict:
    item = json.loads(row["item"])
    media = row.get("media")
    # Ray Data turns a None in a column of bytes into a float NaN: only real bytes are media
    item["media"] = bytes(media) if isinstance(media, (bytes, bytearray, memoryview)) else None
    return item


def mark_dropped(dropped: Dropped, stage: Stage) -> dict:
    item = dropped.item
    item["dropped"] = {"stage": dropped.stage or stage.name, "reason": dropped.reason, "action": dropped.action,
                       **dropped.detail}
    item["media"] = None  # a dropped item's bytes are never needed again
    return item


def _flatten(stage: Stage, outcome) -> Iterator[dict]:
    """yields the items of one outcome: the kept item, a marked dropped one, or a fan-out's items"""
    if isinstance(outcome, Dropped):
        yield mark_dropped(outcome, stage)
    elif isinstance(outcome, dict):
        if not stage.receives_dropped:  # a sink's outputs are ledger rows, not records
            outcome.setdefault("producers", {})[stage.name] = stage.producer
        yield outcome
    else:
        for inner in outcome:
            yield from _flatten(stage, inner)


def run_batch(stage: Stage, items: list[dict]) -> Iterator[dict]:
    """yields what one ``process_batch`` call makes of ``items`` (dropped items pass by a stage
    that does not receive them). A batch-wide error drops the batch's items, with the reason."""
    passed = [] if stage.receives_dropped else [it for it in items if "dropped" in it]
    live = items if stage.receives_dropped else [it for it in items if "dropped" not in it]
    if live:
        try:
            outcomes = stage.process_batch(live)
            if len(outcomes) != len(live):
                raise RuntimeError(f"process_batch returned {len(outcomes)} outcomes for {len(live)} items")
        except ItemFailed as exc:
            outcomes = [Dropped(it, exc.reason) for it in live]
        except Exception as exc:  # noqa: BLE001 - a bug or an engine failure: this batch fails, the run goes on
            log.warning("stage %s failed on a batch of %d:\n%s", stage.name, len(live), traceback.format_exc())
            outcomes = [Dropped(it, f"internal error: {type(exc).__name__}: {exc}") for it in live]
        for outcome in outcomes:
            yield from _flatten(stage, outcome)
    yield from passed


def bind(stage: Stage, shared: dict) -> Stage:
    missing = [n for n in stage.shared_state if n not in shared]
    if missing:
        raise ValueError(f"stage {stage.name} needs shared state {missing}; the pipeline did not provide it")
    stage.shared = {n: shared[n] for n in stage.shared_state}
    return stage


def resolve(stages: list[Stage], overrides: dict[str, StageOverride] | None) -> list[Placement]:
    overrides = overrides or {}
    unknown = set(k for k, v in overrides.items() if v is not None) - {s.name for s in stages}
    if unknown:
        log.debug("stage overrides for stages not in this pipeline: %s", sorted(unknown))
    return [place(s, overrides.get(s.name)) for s in stages]


# -- in this process -----------------------------------------------------------------------------


class LocalExecutor:
    """Runs the stages one batch at a time in this process, streaming (a generator chain)."""

    def __init__(self, stages: list[Stage], overrides: dict[str, StageOverride] | None = None,
                 shared: dict | None = None):
        self.stages = stages
        self.placements = resolve(stages, overrides)
        self.shared = shared or {}

    def run(self, items: Iterable[dict]) -> Iterator[dict]:
        """yields the final items (the sink's outputs, or the last stage's kept and dropped items)"""
        stream: Iterable[dict] = (dict(it) for it in items)
        for stage, placement in zip(self.stages, self.placements):
            bind(stage, self.shared).setup()
            stream = self._batches(stage, stream, placement.batch_size)
        for item in stream:
            yield final_item(encode_row(item))  # the same JSON round trip as on Ray: identical outputs

    @staticmethod
    def _batches(stage: Stage, upstream: Iterable[dict], batch_size: int) -> Iterator[dict]:
        batch: list[dict] = []
        for item in upstream:
            batch.append(item)
            if len(batch) >= batch_size:
                yield from run_batch(stage, batch)
                batch = []
        if batch:
            yield from run_batch(stage, batch)


# -- on Ray Data -------------------------------------------------------------------------------


class StateHolder:
    """The one actor holding a piece of shared state; calls run one at a time."""

    def __init__(self, state):
        self.state = state

    def call(self, method: str, *args, **kwargs):
        return getattr(self.state, method)(*args, **kwargs)


class ActorProxy:
    """A picklable handle with the state's methods: each call is one blocking actor call."""

    def __init__(self, handle):
        self._handle = handle

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        import ray

        return lambda *args, **kwargs: ray.get(self._handle.call.remote(method, *args, **kwargs))


def _rows_to_items(batch: dict) -> list[dict]:
    return [decode_row({"item": i, "media": m}) for i, m in zip(batch["item"], batch["media"])]


def _emit(items: Iterable[dict]) -> Iterator[dict]:
    """yields Ray blocks {item: [...], media: [...]} of at most ROWS_PER_BLOCK rows"""
    chunk: list[dict] = []
    for item in items:
        chunk.append(encode_row(item))
        if len(chunk) >= ROWS_PER_BLOCK:
            yield {"item": [r["item"] for r in chunk], "media": [r["media"] for r in chunk]}
            chunk = []
    if chunk:
        yield {"item": [r["item"] for r in chunk], "media": [r["media"] for r in chunk]}


def stage_task(batch: dict, stage: Stage, shared: dict) -> Iterator[dict]:
    """Ray Data task UDF of a stateless stage."""
    bind(stage, shared)
    yield from _emit(run_batch(stage, _rows_to_items(batch)))


class StageActor:
    """Ray Data actor UDF: ``setup()`` once per actor, then one ``process_batch`` per call."""

    def __init__(self, stage: Stage, shared: dict):
        self.stage = bind(stage, shared)
        self.stage.setup()

    def __call__(self, batch: dict) -> Iterator[dict]:
        yield from _emit(run_batch(self.stage, _rows_to_items(batch)))


class RayExecutor:
    """The Ray Data adapter: each stage becomes ``map_batches`` with the resources it declares
    (overridden per stage name), as tasks or as an actor pool when it has setup work; before any
    starts, the requests are checked against the cluster (:func:`placement.fit_to_cluster`)."""

    def __init__(self, stages: list[Stage], overrides: dict[str, StageOverride] | None = None,
                 shared: dict | None = None, max_restarts: int = 2):
        import ray

        self.stages = stages
        self.shape = ClusterShape.from_ray(ray.cluster_resources(), ray.nodes())
        self.placements, notes = fit_to_cluster(resolve(stages, overrides), self.shape)
        for note in notes:
            log.warning("%s", note)
        self.notes = notes
        # restarted with its first state if killed: claims made since are lost, never shard keys.
        # One actor per distinct object: names bound to the same state share it, as they do in
        # LocalExecutor (and an actor is a worker process: ~2 CPU-seconds to start on a small node)
        holder = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(StateHolder)
        self._holders: dict[int, object] = {}  # id(state) → its actor
        self._actors = {}
        for name, state in (shared or {}).items():
            if id(state) not in self._holders:
                self._holders[id(state)] = holder.remote(state)
            self._actors[name] = self._holders[id(state)]
        self.shared = {name: ActorProxy(actor) for name, actor in self._actors.items()}
        self.max_restarts = max_restarts  # a crashed actor (out of memory, a lost node) is restarted this often

    def dataset(self, items: list[dict]):
        """The lazy Ray dataset of the final rows (``{"item", "media"}``); see :func:`iter_items`."""
        import ray

        ds = ray.data.from_items([encode_row(dict(it)) for it in items], override_num_blocks=max(1, min(len(items), 10000)))
        placements = pools_for_input(self.stages, self.placements, len(items))
        free = self.shape.total_cpus - sum(p.actors * p.num_cpus for p in placements if p.actors)
        for stage, p in zip(self.stages, placements):  # the pipeline, top to bottom
            stage.free_cpus = max(free, 0.0)
            ds = self.apply(ds, stage, p)
        return ds

    def apply(self, ds, stage: Stage, p: Placement):
        import ray

        options = {"batch_size": p.batch_size, "num_cpus": p.num_cpus}
        if p.num_gpus:
            options["num_gpus"] = p.num_gpus
        if p.memory_mb:
            options["memory"] = p.memory_mb << 20
        if p.actors:
            return ds.map_batches(StageActor, fn_constructor_args=(stage, self.shared),
                                  compute=ray.data.ActorPoolStrategy(size=p.actors),
                                  max_restarts=self.max_restarts, max_task_retries=self.max_restarts, **options)
        return ds.map_batches(stage_task, fn_args=(stage, self.shared), **options)

    def run(self, items: list[dict]) -> Iterator[dict]:
        """yields the final items, as :meth:`LocalExecutor.run` does"""
        yield from iter_items(self.dataset(items)) if items else iter(())

    def close(self) -> None:
        import ray

        for actor in self._holders.values():
            ray.kill(actor)
        self._holders.clear()
        self._actors.clear()


def pools_for_input(stages: list[Stage], placements: list[Placement], num_items: int) -> list[Placement]:
    """The placements with each actor pool cut to the batches its stage can receive: a stage no
    earlier stage fans out to gets at most ``num_items`` items, so ``ceil(num_items / batch_size)``
    actors. Four short videos then start one shard writer, not two; a 3-video annotate run starts
    no more model actors than it has videos. Each actor is a worker process (and maybe a model)."""
    out, bounded = [], True
    for stage, p in zip(stages, placements):
        if bounded and p.actors:
            useful = max(1, -(-num_items // max(1, p.batch_size)))
            if useful < p.actors:
                log.info("stage %s: %d actor(s), not %d: %d item(s) make at most %d batch(es) of %d",
                         p.name, useful, p.actors, num_items, useful, p.batch_size)
                p = replace(p, actors=useful)
        out.append(p)
        bounded = bounded and not stage.fans_out
    return out


def final_item(row: dict) -> dict:
    """A pipeline's output row as an item; ``media`` only where bytes are left."""
    item = decode_row(row)
    if item["media"] is None:
        del item["media"]
    return item


def iter_items(ds) -> Iterator[dict]:
    for row in ds.iter_rows():
        yield final_item(row)
