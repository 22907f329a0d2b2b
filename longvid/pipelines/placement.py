"""Where each stage runs and with what: declared resources, per-stage overrides from config, and
the check against the cluster that runs before anything starts.

Ray never fails a request nobody can satisfy: a task asking for a GPU on a CPU-only cluster, or
for more CPUs than an actor pool leaves free, waits forever. :func:`fit_to_cluster` scales down
what can be scaled (fractional CPUs, actor counts) and refuses the rest in one line that names
the stage and the flag to change. Pure arithmetic: testable without Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from ..annotators.base import Stage


class ResourceError(ValueError):
    """A stage asks for what the cluster cannot give; the message names the setting to change."""


@dataclass
class StageOverride:
    """Config for one stage by name (YAML ``stages: {segment: {num_gpus: 0.25}}`` or
    ``--stages.segment.num-gpus 0.25``); unset fields keep what the stage declares."""

    num_cpus: float | None = None  # CPUs per task/actor; fractions let I/O-bound stages share a core
    num_gpus: float | None = None  # GPU share per worker (0.25: four workers share one GPU)
    memory_mb: int | None = None  # heap reserved per worker, MiB
    actors: int | None = None  # actor pool size (stages with setup work); 0 forces stateless tasks
    batch_size: int | None = None  # items per process_batch call


@dataclass
class Placement:
    """What the adapter asks Ray for, per stage (after overrides and the cluster check)."""

    name: str
    num_cpus: float
    num_gpus: float
    memory_mb: int
    actors: int  # 0: stateless tasks
    batch_size: int


def place(stage: Stage, override: StageOverride | None = None) -> Placement:
    """The stage's declaration with ``override``'s set fields on top."""
    r = stage.resources
    actors = stage.actors or (1 if stage.has_setup() else 0)
    base = Placement(stage.name, r.num_cpus, r.num_gpus, r.memory_mb, actors, stage.batch_size)
    if override is None:
        return base
    given = {f.name: getattr(override, f.name) for f in fields(override) if getattr(override, f.name) is not None}
    placed = replace(base, **given)
    if placed.actors < 0 or placed.batch_size < 1 or placed.num_cpus < 0 or placed.num_gpus < 0:
        raise ResourceError(f"stages.{stage.name}: actors >= 0, batch_size >= 1 and non-negative CPUs/GPUs, please")
    return placed


def flag(name: str, setting: str) -> str:
    return f"--stages.{name}.{setting.replace('_', '-')}"


@dataclass
class ClusterShape:
    """Totals and the largest node, per resource (a worker must fit on one node)."""

    total_cpus: float
    total_gpus: float
    node_cpus: float
    node_gpus: float
    node_memory_mb: float

    @classmethod
    def from_ray(cls, cluster: dict, nodes: list[dict]) -> "ClusterShape":
        alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)] or [cluster]
        return cls(float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0)),
                   max(float(n.get("CPU", 0)) for n in alive), max(float(n.get("GPU", 0)) for n in alive),
                   max(float(n.get("memory", 0)) for n in alive) / (1 << 20))


ACTOR_CPU_SHARE = 0.5  # actor pools hold their CPUs for the whole run: at most this share, or their input starves


def fit_to_cluster(placements: list[Placement], shape: ClusterShape) -> tuple[list[Placement], list[str]]:
    """Placements that Ray can schedule on ``shape`` and notes on what was scaled down;
    :class:`ResourceError` for what cannot be scaled (a GPU or memory nobody has)."""
    notes: list[str] = []
    out = [replace(p) for p in placements]
    if shape.total_cpus <= 0:
        raise ResourceError("the Ray cluster has no CPUs to run stages on: start workers, or set --ray.num-cpus")
    for p in out:
        if p.num_gpus > shape.node_gpus:
            has = "has no GPU" if shape.total_gpus == 0 else f"has at most {shape.node_gpus:g} GPU(s) on one node"
            raise ResourceError(f"stage {p.name} asks for {p.num_gpus:g} GPU per worker but the Ray cluster {has}: "
                                f"set {flag(p.name, 'num_gpus')} {min(shape.node_gpus, p.num_gpus):g}")
        if p.memory_mb and shape.node_memory_mb and p.memory_mb > shape.node_memory_mb:
            raise ResourceError(f"stage {p.name} asks for {p.memory_mb} MiB per worker but the largest node has "
                                f"{shape.node_memory_mb:.0f} MiB: set {flag(p.name, 'memory_mb')} lower")
        if p.num_cpus > shape.node_cpus:
            notes.append(f"stage {p.name}: {p.num_cpus:g} CPUs per worker > {shape.node_cpus:g} on the largest node; "
                         f"using {shape.node_cpus:g}")
            p.num_cpus = shape.node_cpus
        if p.actors and p.num_gpus:
            fit = max(1, int(shape.total_gpus / p.num_gpus + 1e-9))
            if p.actors > fit:
                notes.append(f"stage {p.name}: {p.actors} actors x {p.num_gpus:g} GPU > {shape.total_gpus:g} GPUs; using {fit}")
                p.actors = fit
    _fit_actor_cpus(out, shape, notes)
    _fit_task_cpus(out, shape, notes)
    return out, notes


def _fit_actor_cpus(out: list[Placement], shape: ClusterShape, notes: list[str]) -> None:
    """Fewer actors first (never below one per pool), then fractional CPUs, until the pools hold
    at most ACTOR_CPU_SHARE of the cluster."""
    budget = ACTOR_CPU_SHARE * shape.total_cpus
    pools = [p for p in out if p.actors and p.num_cpus]
    while sum(p.actors * p.num_cpus for p in pools) > budget + 1e-9:
        shrinkable = [p for p in pools if p.actors > 1 and not p.num_gpus]
        if not shrinkable:
            break
        biggest = max(shrinkable, key=lambda p: p.actors * p.num_cpus)
        biggest.actors -= 1
        notes.append(f"stage {biggest.name}: actor pool cut to {biggest.actors} to leave CPUs for the other stages")
    held = sum(p.actors * p.num_cpus for p in pools)
    if held > budget + 1e-9:
        factor = budget / held
        for p in pools:
            scaled = math.floor(p.num_cpus * factor * 100) / 100 or 0.01
            notes.append(f"stage {p.name}: {p.num_cpus:g} CPUs per actor scaled to {scaled:g}")
            p.num_cpus = scaled


def _fit_task_cpus(out: list[Placement], shape: ClusterShape, notes: list[str]) -> None:
    """A task that needs more CPUs than the actor pools leave free never starts: scale it down."""
    free = shape.total_cpus - sum(p.actors * p.num_cpus for p in out if p.actors)
    for p in out:
        if not p.actors and p.num_cpus > free + 1e-9:
            scaled = max(0.01, math.floor(free * 100) / 100)
            notes.append(f"stage {p.name}: {p.num_cpus:g} CPUs per task > {free:g} left beside the actor pools; "
                         f"using {scaled:g}")
            p.num_cpus = scaled
