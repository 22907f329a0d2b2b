"""The stage contract: an annotator is a name, a version, declared resources and ``process(item)``.

Annotators are pure per-item logic: they never import Ray. ``pipelines`` maps ``resources`` onto
an executor. A per-item failure is raised as :class:`ItemFailed` with a reason a person
understands; the pipeline records it in the ledger and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs. Fractions share a core or a GPU between workers."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


class ItemFailed(Exception):
    """This item cannot go on; ``reason`` is written to the ledger as is."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Stage:
    """Base of every annotator. ``process`` returns the (updated) item.

    Item shape (a plain dict, so it crosses process boundaries as JSON + bytes):
    ``source`` (url, source_index, metadata), ``video_id``, ``media`` (bytes, dropped once
    written or failed), ``video`` (the probed record), ``shots``, ``clips``, ``plan``.
    """

    name: str = "stage"
    version: str = "1"
    resources: Resources = Resources()

    def setup(self) -> None:
        """Load weights or open clients; called once per worker before the first item."""

    def process(self, item: dict) -> dict:
        raise NotImplementedError
