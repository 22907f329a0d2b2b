"""The stage contract: a name, a version, declared resources, a batch size, ``setup()`` and
``process_batch(items)`` whose every item is kept, dropped with a reason, or fanned out.

Annotators are pure logic: they never import Ray. ``pipelines.executors`` runs a list of stages,
either in this process or on Ray Data, and maps ``resources`` onto Ray. A per-item failure is
raised as :class:`ItemFailed` (or returned as :class:`Dropped`); the executor turns it into a
ledger row and the run goes on. No stage checks whether an item failed earlier: the executors
never hand it a dropped item.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Iterable, Union

log = logging.getLogger("longvid")


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs. Fractions share a core or a GPU between workers."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_mb: int = 0  # heap reserved per worker (0: none); Ray refuses to place it where it does not fit


class ItemFailed(Exception):
    """This item cannot go on; ``reason`` is written to the ledger as is."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Dropped:
    """An item that goes no further. It still flows to the sink (the ledger) with these fields:
    ``action`` is the ledger action (``failed``, or ``duplicate`` for an item kept elsewhere),
    ``detail`` extra ledger columns (``duplicate_of``). The executor fills ``stage``."""

    item: dict
    reason: str
    action: str = "failed"
    detail: dict = field(default_factory=dict)
    stage: str = ""


# What ``process`` may return for one item: the item (kept), a Dropped, or an iterable of items /
# Dropped (fan-out: one video in, one item per clip out; an empty list drops silently, so don't).
Outcome = Union[dict, Dropped, Iterable]


class Stage:
    """Base of every annotator.

    Item shape (a plain dict, so it crosses process boundaries as JSON + one bytes field):
    ``source`` (url, source_index, metadata), ``video_id``, ``media`` (bytes, dropped once
    written or failed), ``probe``, ``shots``, ``clips``, ``plan``, ``producers``.
    """

    name: str = "stage"
    version: str = "1"
    resources: Resources = Resources()
    batch_size: int = 1  # items per process_batch call (a model stage batches for its engine)
    actors: int = 0  # workers of a stage with setup work (0: one per stage by default); tasks otherwise
    shared_state: tuple[str, ...] = ()  # executor-owned state this stage calls (self.shared[name]), e.g. a registry
    receives_dropped: bool = False  # a sink sees dropped items too (to write their ledger rows)
    fans_out: bool = False  # may return several items for one (one video in, its clips out)
    free_cpus: float | None = None  # set by RayExecutor: the cluster's CPUs its actor pools do not hold

    shared: dict = {}  # set by the executor before setup(): name → handle with the state's methods

    @property
    def producer(self) -> str:
        """What the record's ``producers`` map says made this stage's fields."""
        return f"{self.name}@{self.version}"

    def has_setup(self) -> bool:
        """True when ``setup`` does real work (load weights): such a stage runs as actors."""
        return type(self).setup is not Stage.setup

    def setup(self) -> None:
        """Load weights or open clients; called once per worker before the first item."""

    def process(self, item: dict) -> Outcome:
        raise NotImplementedError

    def process_batch(self, items: list[dict]) -> list[Outcome]:
        """One outcome per input item, in order. The default calls ``process`` on each and turns
        an :class:`ItemFailed` into a :class:`Dropped`; any other error drops only its own item,
        as an internal error (a bug or an unforeseen input), logged with its traceback."""
        out: list[Outcome] = []
        for item in items:
            try:
                out.append(self.process(item))
            except ItemFailed as exc:
                out.append(Dropped(item, exc.reason))
            except Exception as exc:  # noqa: BLE001 - one item's bug must not stop the run
                log.warning("stage %s failed on %s:\n%s", self.name, (item.get("source") or {}).get("url"),
                            traceback.format_exc())
                out.append(Dropped(item, f"internal error: {type(exc).__name__}: {exc}"))
        return out


class ModelStage(Stage):
    """A stage whose actors each hold a model (loaded in ``setup``): its settings, what each actor
    asks for, how many actors, and the items per model call. The layer kinds' model stages."""

    def __init__(self, config, num_cpus: float, num_gpus: float, actors: int, batch_size: int):
        self.config = config
        self.resources = Resources(num_cpus=num_cpus, num_gpus=num_gpus)
        self.actors, self.batch_size = actors, batch_size
