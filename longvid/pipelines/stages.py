"""How an annotator becomes a Ray Data stage: rows carry the item as JSON plus its media bytes.

A row is ``{"item": str, "media": bytes | None}``; JSON keeps Arrow schemas trivial and makes
sure nothing but data crosses process boundaries. A failed item keeps flowing (so the ledger
sees it) but no later stage touches it.
"""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass

from ..annotators.base import ItemFailed, Stage

log = logging.getLogger("longvid")


@dataclass
class StageSpec:
    """One step of a pipeline: the annotator and what each of its workers gets."""

    stage: Stage
    num_cpus: float  # CPUs reserved per task/actor (fractions let I/O-bound stages share a core)
    num_gpus: float = 0.0  # GPU share per actor (captioners)
    actors: int = 0  # >0: an actor pool of this size (setup() once per actor); 0: stateless tasks
    batch_size: int | None = None  # rows per call for actor stages


def encode_row(item: dict) -> dict:
    media = item.pop("media", None)
    return {"item": json.dumps(item, separators=(",", ":")), "media": media}


def decode_row(row: dict) -> dict:
    item = json.loads(row["item"])
    media = row.get("media")
    item["media"] = bytes(media) if media is not None else None
    return item


def mark_failed(item: dict, stage: str, reason: str) -> dict:
    item["failed"] = {"stage": stage, "reason": reason}
    item["media"] = None  # a failed item's bytes are never needed again
    return item


def apply_stage(stage: Stage, item: dict) -> dict:
    """Run one stage on one item; every exception becomes a ledger reason, never a crash."""
    if item.get("failed") or item.get("duplicate_of"):
        return item
    try:
        return stage.process(item)
    except ItemFailed as exc:
        return mark_failed(item, stage.name, exc.reason)
    except Exception as exc:  # a bug or an unforeseen input: record it and go on
        log.warning("stage %s failed on %s:\n%s", stage.name, item.get("source", {}).get("url"), traceback.format_exc())
        return mark_failed(item, stage.name, f"internal error: {type(exc).__name__}: {exc}")


def row_mapper(stage: Stage):
    """A function for ``Dataset.map`` running ``stage`` on each row (stateless stages)."""

    def run(row: dict) -> dict:
        return encode_row(apply_stage(stage, decode_row(row)))

    run.__name__ = f"stage_{stage.name}"
    return run


class ActorStage:
    """A callable class for ``Dataset.map_batches`` with an actor pool: ``setup()`` runs once."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.stage.setup()

    def __call__(self, batch: dict) -> dict:
        items = [decode_row({"item": i, "media": m}) for i, m in zip(batch["item"], batch["media"])]
        process_batch = getattr(self.stage, "process_batch", None)
        if process_batch is not None:
            live = [it for it in items if not (it.get("failed") or it.get("duplicate_of"))]
            try:
                process_batch(live)
            except ItemFailed as exc:
                for it in live:
                    mark_failed(it, self.stage.name, exc.reason)
            except Exception as exc:
                for it in live:
                    mark_failed(it, self.stage.name, f"internal error: {type(exc).__name__}: {exc}")
        else:
            items = [apply_stage(self.stage, it) for it in items]
        rows = [encode_row(it) for it in items]
        return {"item": [r["item"] for r in rows], "media": [r["media"] for r in rows]}
