"""Layer kinds: what ``longvid annotate`` can make, one class per kind, found by name.

A kind is a small class (:class:`LayerKind`) that says
- ``name`` (``--kind NAME``) and ``config_field``/``config_type``: its settings, which become the
  ``AnnotateConfig`` field ``config_field`` (flags ``--<config_field>.*``, YAML ``<config_field>:``);
- ``model(settings)``: the model it was given ("" = not this kind; the kind is inferred from the
  one model given when ``--kind`` is not set);
- ``check(config)``, ``producer(settings)`` and ``recipe(config)``: validation, who made the rows,
  and what a resumed run must share (its input layers);
- ``plan_inputs(storage, config, videos)``: the video items its first stage reads (index rows, plus
  e.g. a source layer's timeline);
- ``stages(settings, storage, placement)``: its pipeline (:class:`~longvid.annotators.base.Stage`
  list); the last stage yields **result items** ``{"part", "key", "result": JSON}`` with
  ``result = {"expected": N, "rows": [...], "failures": [{"stage", "clip_id", "reason"}],
  "num_tokens": n}``: ``expected`` is how many result items that video yields in all;
- ``schema``, ``item_level`` and ``words(table)``: the rows' Arrow schema, whether a failure is
  one clip or one video (status and retry), and how words are counted (Arrow over one part).

Adding a kind = one module in this package that defines a subclass and decorates it with
:func:`register`; every module here is imported on first use. See docs/annotation.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ...annotators.base import Stage
from ...shards.layers import LAYER_SCHEMA
from ...shards.storage import Storage

KINDS: dict[str, type["LayerKind"]] = {}


def register(cls: type["LayerKind"]) -> type["LayerKind"]:
    """Class decorator: make ``cls`` a layer kind under ``cls.name``."""
    if not cls.name or not cls.config_field:
        raise ValueError(f"layer kind {cls.__name__} needs a name and a config_field")
    if KINDS.get(cls.name, cls) is not cls:
        raise ValueError(f"two layer kinds are named {cls.name!r}: {KINDS[cls.name].__name__}, {cls.__name__}")
    KINDS[cls.name] = cls
    return cls


def load_kinds() -> dict[str, type["LayerKind"]]:
    """Every kind module of this package, imported once (so a new file is a new kind)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return KINDS


def get_kind(name: str) -> "LayerKind":
    kinds = load_kinds()
    if name not in kinds:
        raise ValueError(f"unknown layer kind {name!r}; choose one of {sorted(kinds)}")
    return kinds[name]()


@dataclass
class PipelineConfig:
    """How a kind's stages run (annotate's ``pipeline.*``, and ingest's ``caption.pipeline.*``)."""

    prepare_stage: bool = True  # decode+resize in CPU tasks that feed the model (off: the model worker decodes inline and waits)
    prepare_cpus: float = 1.0  # CPUs per preparation task: one decode per video
    num_gpus: float | str = "auto"  # per model actor (= tensor_parallel_size for vLLM); auto: 1 where the cluster has GPUs, else 0 (CPU, with a note)
    num_cpus: float = 1.0  # per model actor: the engine's own CPU work (tokenising, scheduling)
    pool_size: int = 1  # model actors, one engine each: usually one per GPU
    batch_size: int = 32  # clips (captioner) or videos (writer) per model call: big enough for vLLM to batch well
    videos_per_part: int = 64  # videos per layer part: the most a kill can lose, and a bound on file count
    max_restarts: int = 2  # times a crashed model actor is restarted (out of memory, driver hiccup)


@dataclass(frozen=True)
class ModelPlacement:
    """What the pipeline settings give a kind's stages (per-stage overrides still apply on top)."""

    num_cpus: float  # per model actor
    num_gpus: float  # per model actor, already resolved from "auto"
    actors: int  # model actors (one engine each)
    batch_size: int  # items per model call
    prepare_stage: bool  # decode in CPU tasks before the model (kinds that decode media)
    prepare_cpus: float  # CPUs per preparation task

    def model_stage(self) -> dict:
        """The keyword arguments every model stage takes: its actors' resources and batch size."""
        return dict(num_cpus=self.num_cpus, num_gpus=self.num_gpus, actors=self.actors, batch_size=self.batch_size)


# JSON fields that are references, not written text: left out of a layer's word count
_JSON_REFS = (r'"(task|scope|value_type)":\s*"[^"]*"|"(evidence_clip_ids|evidence_spans|clip_id|clip_ids|segment|'
              r'segments|count|start|end)":\s*(\[[^\]]*\]+|"[^"]*"|-?[0-9.]+)')


def value_words(table: pa.Table) -> int:
    """Words of a part's ``value`` column, in Arrow: text values as written; JSON values without
    their keys, punctuation and reference fields (clip ids, spans, counts)."""
    if table.num_rows == 0:
        return 0
    stripped = pc.replace_substring_regex(pc.replace_substring_regex(
        pc.replace_substring_regex(table["value"], _JSON_REFS, " "), r'"[A-Za-z_]+":', " "), r'[{}\[\]",:]', " ")
    values = pc.if_else(pc.equal(table["value_type"], "json"), stripped, table["value"])
    return int(pc.sum(pc.count_substring_regex(values, r"\S+")).as_py() or 0)


class LayerKind:
    """Base of the kinds; subclasses set the class attributes and the methods marked required."""

    name: str = ""  # --kind NAME; also the default layer stage name in messages
    config_field: str = ""  # AnnotateConfig field of this kind's settings
    config_type: type = object  # that field's dataclass
    model_flag: str = ""  # CLI shortcut for the model (e.g. --captioner); "" → --<config_field>.model
    help: str = ""  # one line for --help
    item_level: str = "video"  # what one failure is: "clip" (clip-level rows) or "video"
    schema: pa.Schema = LAYER_SCHEMA  # the rows of its parts
    stage_names: tuple[str, ...] = ()  # names of its stages: each gets --stages.NAME.* overrides

    # -- required --------------------------------------------------------------------------------
    def model(self, settings) -> str:
        """The model this kind was given in ``settings`` ("" = none)."""
        raise NotImplementedError

    def producer(self, settings) -> dict:
        """``layer.json``'s producer record (model, engine, prompt hashes, settings)."""
        raise NotImplementedError

    def stages(self, settings, storage: Storage, placement: ModelPlacement) -> list[Stage]:
        raise NotImplementedError

    # -- optional --------------------------------------------------------------------------------
    def with_backend(self, settings, backend: str):
        """``settings`` with the engine backend set (``--backend``); kinds with one engine ignore it."""
        return settings

    def backend(self, settings) -> str:
        """The engine backend ("" when the kind has a single engine)."""
        return ""

    def check(self, config) -> None:
        """Refuse settings that cannot work (raise ValueError with the flag to set)."""

    def recipe(self, config) -> dict:
        """Recipe entries besides the producer (e.g. input layers): a resume must match them."""
        return {}

    def plan_inputs(self, storage: Storage, config, videos: list[dict]) -> list[dict]:
        """The items the first stage reads, one per video (index rows + part); default as is."""
        return videos

    def retryable(self, failure: dict, video_ok: bool) -> bool:
        """Whether ``--retry-failed`` may fill this failure: a video that produced nothing, or a
        clip that got nothing in a clip-level kind (not a QA item the checks refuted)."""
        return (not video_ok) or (self.item_level == "clip" and bool(failure.get("clip_id")))

    def words(self, table: pa.Table) -> int:
        """Words written in one part (``value`` and ``value_type`` columns)."""
        return value_words(table)

