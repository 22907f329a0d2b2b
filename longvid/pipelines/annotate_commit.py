"""The driver side of ``longvid annotate``: result items collected per part, each part committed
(rows, then its failure rows, then ledger rows) as soon as its last video is in, and the plan and
merge of ``--retry-failed``.

A retry rewrites a part as a new file that replaces the old one in one rename (``Storage.write_bytes``):
a kill mid-retry leaves the old part whole; parts without retryable failures are never opened for
writing.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from ..shards.faults import fault_point
from ..shards.layers import FAILURE_SCHEMA, read_failures, read_layer_part, write_failures_part, write_layer_part
from ..shards.ledger import Ledger
from ..shards.storage import Storage
from .kinds import LayerKind


class PartTracker:
    """Collects model results per part (driver side) and says when a part is whole."""

    def __init__(self, parts: dict[str, list[dict]]):
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


def result_of(out: dict) -> dict:
    """A result item's result; a dropped item (a stage's per-item or batch-wide error) becomes a failure."""
    if "dropped" not in out:
        return json.loads(out["result"])
    meta = json.loads(out["meta"]) if "meta" in out else {"expected": 1, "clip_id": None}
    return {"expected": meta["expected"], "rows": [], "num_tokens": 0,
            "failures": [{"stage": out["dropped"]["stage"], "clip_id": meta.get("clip_id"),
                          "reason": out["dropped"]["reason"]}]}


def _ledger_rows(ledger: Ledger, video: dict, ok: bool, failures: list[dict], stage: str) -> None:
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


def _redone(table: pa.Table, retried: dict[str, list | None]) -> pa.ChunkedArray:
    """Mask of the rows of ``table`` (key, clip_id) that a retry of ``retried`` replaces: every row
    of a video retried whole, the rows of the clips retried of the others."""
    whole = pa.array([k for k, clips in retried.items() if clips is None], pa.string())
    pairs = pa.array([f"{k}/{c}" for k, clips in retried.items() for c in clips or []], pa.string())
    pair = pc.binary_join_element_wise(table["key"], pc.fill_null(table["clip_id"], ""), "/")
    return pc.or_(pc.is_in(table["key"], whole), pc.is_in(pair, pairs))


def commit_part(storage: Storage, layer: str, version: str, kind: LayerKind, ledger: Ledger, part: str,
                videos: list[dict], results: dict[str, list[dict]], stage: str,
                retried: dict[str, list | None] | None = None) -> dict:
    """Write one part (rows of every video in it), then its failure rows, then its ledger rows;
    returns counts. ``retried``: a retry's items, merged into the part already on storage (its
    other rows and failures kept as they are)."""
    rows, failure_rows, kept_keys = [], [], set()
    if retried is not None:
        old = read_layer_part(storage, layer, version, part).cast(kind.schema)
        old = old.filter(pc.invert(_redone(old, retried)))
        kept_keys = set(pc.unique(old["key"]).to_pylist())  # bounded: one part's keys
    counts = {"videos": 0, "failed_videos": 0, "rows": 0, "failures": 0, "tokens": 0}
    for video in videos:
        got = results.get(video["key"], [])
        video_rows = [r for res in got for r in res["rows"]]
        failures = [f for res in got for f in res["failures"]]
        ok = bool(video_rows) or video["key"] in kept_keys  # a clip retry keeps the video's other rows
        counts["tokens"] += sum(res.get("num_tokens", 0) for res in got)
        counts["videos"] += 1
        counts["failed_videos"] += 0 if ok else 1
        counts["rows"] += len(video_rows)
        counts["failures"] += len(failures)
        rows.extend(video_rows)
        failure_rows += [{"key": video["key"], "clip_id": f.get("clip_id"), "stage": f["stage"], "reason": f["reason"],
                          "retry": kind.retryable(f, ok)} for f in failures]
        _ledger_rows(ledger, video, ok, failures, stage)
    new_rows = pa.Table.from_pylist(rows, schema=kind.schema)
    new_failures = pa.Table.from_pylist(failure_rows, schema=FAILURE_SCHEMA)
    if retried is not None:
        new_rows = pa.concat_tables([old, new_rows])
        old_f = read_failures(storage, layer, version, part)
        replaced = pc.and_(_redone(old_f, retried), old_f["retry"]) if old_f.num_rows else pa.array([], pa.bool_())
        new_failures = pa.concat_tables([old_f.filter(pc.invert(replaced)), new_failures])
    ordered = new_rows.sort_by([("key", "ascending"), ("start", "ascending"), ("clip_id", "ascending")])
    if retried is not None:
        fault_point("annotate-retry-before-replace")  # kill tests: the old part must stay whole
    write_layer_part(storage, layer, version, part, ordered.to_pylist(), kind.schema)  # bounded: one part
    # after the part: a part without its failures file reads as "no failures", and a retry that
    # stops between the two finds the old failures, whose items it then redoes (their rows replaced)
    write_failures_part(storage, layer, version, part, new_failures.to_pylist())
    ledger.flush()  # after the part: a part on storage is the commit, the ledger only reports it
    return counts


def retry_plan(storage: Storage, layer: str, version: str, parts: dict[str, list[dict]], kind: LayerKind):
    """The committed parts that hold retryable failures, each with only those videos (a video
    whose failed items are all clips of an otherwise captioned video carries ``only_clips``), and
    per part key → clip ids to redo (None: the whole video)."""
    failed = read_failures(storage, layer, version).filter(pc.field("retry"))
    by_key: dict[str, set | None] = {}
    for row in failed.select(["key", "clip_id"]).to_pylist():  # bounded: the failures only
        if row["clip_id"] is None or kind.item_level != "clip":
            by_key[row["key"]] = None
        elif by_key.get(row["key"], set()) is not None:
            by_key.setdefault(row["key"], set()).add(row["clip_id"])
    todo, retried = {}, {}
    for name, videos in parts.items():
        chosen = [v for v in videos if v["key"] in by_key]
        if chosen:
            retried[name] = {v["key"]: sorted(by_key[v["key"]]) if by_key[v["key"]] else None for v in chosen}
            todo[name] = [dict(v, only_clips=retried[name][v["key"]]) if retried[name][v["key"]] else v
                          for v in chosen]
    return todo, retried
