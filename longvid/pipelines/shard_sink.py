"""The ingest's sink stage: whole shards, then their index parts, then one ledger row per item.

It receives every item, the dropped ones too, so each source gets its ledger row here. Exactly once
under a kill at any instant: a shard's number is the run's first number plus the manifest row of
its first video, so a retried batch (Ray restarts a killed writer and runs the batch again)
computes the same names, finds a shard already published, and only completes what the killed
attempt left out (its index part). The publish itself is the mark.
"""

from __future__ import annotations

from ..annotators.base import ItemFailed, Resources, Stage
from ..annotators.plan import video_record
from ..annotators.remux import to_mp4
from ..shards.faults import fault_point
from ..shards.index import part_paths, rebuild_index_part, write_index_part
from ..shards.schema import STATUS_FAILED, STATUS_OK
from ..shards.storage import Storage
from ..shards.writer import ShardWriter, encode_json, shard_name, shard_number


class IngestState:
    """Content hash → the first key holding it; keys committed to a shard; the next shard number."""

    def __init__(self, owners: dict[str, str], committed: list[str], next_shard: int):
        self.owners = dict(owners)
        self.committed = set(committed)
        self.next_number = next_shard
        self.first_number = next_shard  # this run's shard numbers are first_number + manifest row

    def first_shard(self) -> int:
        return self.first_number

    def claim(self, sha256: str, key: str) -> str:
        fault_point("registry-claim")
        owner = self.owners.setdefault(sha256, key)
        if owner != key:  # the worst instant: the first claim lives only in this process
            fault_point("registry-duplicate-claim")
        return owner

    def uncommitted(self, keys: list[str]) -> list[str]:
        return [k for k in keys if k not in self.committed]

    def mark_committed(self, keys: list[str]) -> None:
        self.committed.update(keys)

    def next_shard(self) -> int:
        self.next_number += 1
        return self.next_number - 1


def ledger_row(item: dict, shard: str | None = None) -> dict:
    """The ledger's view of a finished item."""
    src = item["source"]
    row = {"source_index": src.get("source_index"), "url": src["url"], "video_id": item.get("video_id"),
           "sha256": item.get("sha256"), "duration": (item.get("probe") or {}).get("duration")}
    dropped = item.get("dropped")
    if dropped:
        extra = {k: v for k, v in dropped.items() if k not in ("stage", "reason", "action")}
        status = STATUS_FAILED if dropped["action"] == "failed" else STATUS_OK
        row.update(status=status, action=dropped["action"], stage=dropped["stage"], reason=dropped["reason"], **extra)
    else:
        notes = (item.get("probe") or {}).get("notes") or []  # a header overruled, a preview track skipped
        row.update(status=STATUS_OK, action="written", stage="probe" if notes else "write", shard=shard,
                   reason="; ".join(notes) or None)
    return row


def plan_shard_groups(items: list[dict], max_bytes: int, max_videos: int) -> list[list[dict]]:
    """Split a writer batch into the shards it will become, in order, by size and count.

    Deterministic in the batch alone, so a retried batch forms the same groups and names."""
    groups: list[list[dict]] = []
    size = 0
    for it in items:
        item_bytes = len(it["media"] or b"") + 4096  # media plus its record JSON, roughly
        if not groups or len(groups[-1]) >= max_videos or (groups[-1] and size + item_bytes > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(it)
        size += item_bytes
    return groups


class WriteShards(Stage):
    """Sink: each batch of items → whole shards (then their index parts) and
    one ledger row per item, dropped or written."""

    name = "write"
    version = "1"
    resources = Resources(num_cpus=0.5)  # tar writing and upload
    # Stateless tasks by default: one task per batch, its CPU free again when the shard is up (an actor
    # pool held its CPUs all run, and each actor is one more worker process to start: on a 2-CPU local
    # Ray that was a quarter of the cores and ~4 CPU-seconds). ``--stages.write.actors N``: a fixed pool
    # (cluster/longvid.yaml keeps 8, a core each, for steady uploads).
    receives_dropped = True
    shared_state = ("ingest",)

    def __init__(self, root: str, max_videos: int, max_bytes: int, media: str = "mp4"):
        self.root = root
        self.media = media  # mp4: remux each source into KEY.mp4 (stream copy); source: keep the source bytes
        self.batch_size = max_videos  # one writer call fills at most one shard: bounds what a kill loses
        self.max_videos, self.max_bytes = max_videos, max_bytes
        self.storage: Storage | None = None

    def process_batch(self, items: list[dict]) -> list[dict]:
        if self.storage is None:  # once per task, or per actor of a pool
            self.storage = Storage.for_uri(self.root)
        first_shard = self.shared["ingest"].first_shard()
        good = [it for it in items if "dropped" not in it]
        for it in good:  # remux first: a retried batch then plans the same groups from the same bytes
            self._media_member(it)
        good = [it for it in good if "dropped" not in it]
        shard_of: dict[str, str] = {}
        for group in plan_shard_groups(good, self.max_bytes, self.max_videos):
            name = shard_name(first_shard + int(group[0]["source"]["source_index"]))
            if self.storage.exists(name):  # published by a killed attempt of this same batch
                self._complete_published(name, group)
            else:
                self._write_group(name, group)
            shard_of.update({it["video_id"]: name for it in group})
            for it in group:
                it["media"] = None
        return [ledger_row(it, shard_of.get(it.get("video_id"))) for it in items]

    def _write_group(self, name: str, group: list[dict]) -> None:
        records = {it["video_id"]: video_record(it) for it in group}
        for it in group:
            records[it["video_id"]]["video"].update(it.pop("media_info", {}))

        def on_commit(shard):
            fault_point("writer-after-publish")
            write_index_part(self.storage, shard, records)
            fault_point("writer-after-index")

        number = shard_number(name)
        writer = ShardWriter(self.storage, lambda: number, max_bytes=1 << 62, max_samples=len(group) + 1,
                             on_commit=on_commit)
        with writer:
            for it in group:
                key = it["video_id"]
                writer.write(key, {"json": encode_json(records[key]), it["member_ext"]: it["media"]})

    def _media_member(self, item: dict) -> None:
        """Replace the item's media by its member's bytes (``member_ext``: mp4 after a remux, else the
        source's); an item MP4 cannot hold even after a re-encode is dropped with a reason."""
        source_ext = item["probe"]["media_ext"]
        item["member_ext"] = source_ext
        if self.media == "source":
            return
        try:
            item["media"], item["media_info"] = to_mp4(item["media"], source_ext)
            item["member_ext"] = "mp4"
        except ItemFailed as exc:
            item["dropped"] = {"action": "failed", "stage": "remux", "reason": exc.reason}
            item["media"] = None

    def _complete_published(self, name: str, group: list[dict]) -> None:
        if not self.storage.exists(part_paths(name)[0]):
            rebuild_index_part(self.storage, name)  # from the shard itself: its offsets are the truth
