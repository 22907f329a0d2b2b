"""The ingest's sink stage: whole shards, then their index parts, then one ledger row per item.

It receives every item, the dropped ones too, so each source gets its ledger row here. Its shared
state (``shared["ingest"]``: :class:`IngestState`, one actor on Ray) hands out shard numbers and
knows which keys are committed, so a retried batch never writes a video twice.
"""

from __future__ import annotations

from ..annotators.base import ItemFailed, Resources, Stage
from ..annotators.plan import video_record
from ..annotators.remux import to_mp4
from ..shards.index import write_index_part
from ..shards.layers import layer_dir, write_layer_meta, write_layer_part
from ..shards.ledger import Ledger
from ..shards.schema import STATUS_FAILED, STATUS_OK
from ..shards.storage import Storage
from ..shards.writer import ShardWriter, encode_json


class IngestState:
    """Content hash → the first key holding it; keys committed to a shard; the next shard number."""

    def __init__(self, owners: dict[str, str], committed: list[str], next_shard: int):
        self.owners = dict(owners)
        self.committed = set(committed)
        self.next_number = next_shard

    def claim(self, sha256: str, key: str) -> str:
        return self.owners.setdefault(sha256, key)

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
        row.update(status=STATUS_OK, action="written", stage="write", shard=shard)
    return row


class WriteShards(Stage):
    """Sink: each batch of items → whole shards (then index parts and caption layer parts) and
    one ledger row per item, dropped or written."""

    name = "write"
    version = "1"
    resources = Resources(num_cpus=0.5)  # tar writing and upload
    actors = 2  # shard writers (each writes its own shards in parallel)
    receives_dropped = True
    shared_state = ("ingest",)

    def __init__(self, root: str, max_videos: int, max_bytes: int, caption_layer: tuple[str, str] | None = None,
                 media: str = "mp4"):
        self.root = root
        self.media = media  # mp4: remux each source into KEY.mp4 (stream copy); source: keep the source bytes
        self.batch_size = max_videos  # one writer call fills at most one shard: bounds what a kill loses
        self.max_videos, self.max_bytes = max_videos, max_bytes
        self.caption_layer = caption_layer  # (layer, version) of captions made during ingest, else None
        self.storage: Storage | None = None

    def setup(self) -> None:
        self.storage = Storage.for_uri(self.root)

    def process_batch(self, items: list[dict]) -> list[dict]:
        state = self.shared["ingest"]
        good = [it for it in items if "dropped" not in it]
        fresh = set(state.uncommitted([it["video_id"] for it in good]))
        records: dict[str, dict] = {}
        shard_of: dict[str, str] = {}
        annotations = {it["video_id"]: it.get("annotations", {}) for it in good}

        def on_commit(shard):
            write_index_part(self.storage, shard, records)
            if self.caption_layer:
                self._write_captions(shard, annotations)
            keys = [s.key for s in shard.samples]
            state.mark_committed(keys)
            shard_of.update({k: shard.name for k in keys})

        writer = ShardWriter(self.storage, state.next_shard, max_bytes=self.max_bytes, max_samples=self.max_videos,
                             on_commit=on_commit)
        with writer:
            for it in good:
                key = it["video_id"]
                if key not in fresh:  # a retried batch: already committed by an earlier attempt
                    continue
                ext, media = self._media_member(it)
                if ext is None:
                    continue
                record = video_record(it)
                record["video"].update(it.pop("media_info", {}))
                records[key] = record
                writer.write(key, {"json": encode_json(record), ext: media})
                it["media"] = None
        return [ledger_row(it, shard_of.get(it.get("video_id"))) for it in items]

    def _media_member(self, item: dict) -> tuple[str | None, bytes | None]:
        """(extension, bytes) of the item's media member; (None, None) drops the item with a reason."""
        source_ext = item["probe"]["media_ext"]
        if self.media == "source":
            return source_ext, item["media"]
        try:
            media, item["media_info"] = to_mp4(item["media"], source_ext)
        except ItemFailed as exc:
            item["dropped"] = {"action": "failed", "stage": "remux", "reason": exc.reason}
            item["media"] = None
            return None, None
        return "mp4", media

    def _write_captions(self, shard, annotations: dict[str, dict]) -> None:
        """The shard's captions as one layer part named after it; clip failures in the layer's ledger."""
        layer, version = self.caption_layer
        part = shard.name.rsplit("/", 1)[-1][: -len(".tar")]
        rows, producer = [], None
        ledger = Ledger(self.storage, f"ingest-{part}", directory=f"{layer_dir(layer, version)}/ledger")
        for sample in shard.samples:
            produced = annotations.get(sample.key, {}).get(layer, {}).get(version)
            if produced is None:
                continue
            producer = produced["producer"]
            rows.extend(produced["rows"])
            for failure in produced["failures"]:
                ledger.add(video_id=sample.key, url=failure.get("clip_id"), status=STATUS_FAILED, action="failed",
                           stage="caption", reason=failure["reason"], shard=shard.name)
        write_layer_part(self.storage, layer, version, part, rows)
        if ledger.rows:
            ledger.flush()
        if producer is not None:
            write_layer_meta(self.storage, layer, version, {"producer": producer, "written_by": "ingest"})
