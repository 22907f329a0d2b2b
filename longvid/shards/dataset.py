"""``dataset.json``: the dataset's summary and the list of annotation layers present.

Written last by every run (after shards, index and ledger), so it always describes committed
state. Readers check ``schema_version`` and refuse a newer one.
"""

from __future__ import annotations

import json
import time

import pyarrow.compute as pc

from .index import consolidate
from .sampling import BUCKET_LABELS
from .schema import SCHEMA_VERSION
from .storage import Storage

DATASET_JSON = "dataset.json"
ANNOTATIONS_DIR = "annotations"


class DatasetError(ValueError):
    pass


def read_dataset_json(storage: Storage) -> dict:
    if not storage.exists(DATASET_JSON):
        raise DatasetError(f"{storage.root} is not a LongVid dataset (no {DATASET_JSON})")
    meta = json.loads(storage.read_bytes(DATASET_JSON))
    if meta.get("schema_version", 0) > SCHEMA_VERSION:
        raise DatasetError(
            f"{storage.root} has schema version {meta['schema_version']}; this longvid reads up to {SCHEMA_VERSION}"
        )
    return meta


def list_layers(storage: Storage) -> dict[str, list[str]]:
    """Annotation layers present on storage: layer name → sorted versions."""
    layers: dict[str, set[str]] = {}
    for path in storage.list(ANNOTATIONS_DIR):
        parts = path.split("/")
        if len(parts) >= 4:
            layers.setdefault(parts[1], set()).add(parts[2])
    return {name: sorted(versions) for name, versions in sorted(layers.items())}


def finalize(storage: Storage) -> dict:
    """Consolidate the index and (re)write ``dataset.json``; returns its content."""
    videos, clips = consolidate(storage)
    old = json.loads(storage.read_bytes(DATASET_JSON)) if storage.exists(DATASET_JSON) else {}
    total_seconds = float(pc.sum(videos["duration"]).as_py() or 0.0)
    buckets = {label: 0 for label in BUCKET_LABELS}
    for label in videos["bucket"].to_pylist():
        buckets[label] += 1
    clip_buckets = {label: 0 for label in BUCKET_LABELS}
    for label in clips["bucket"].to_pylist():
        clip_buckets[label] += 1
    meta = {
        "schema_version": SCHEMA_VERSION,
        "format": "longvid-webdataset",
        "created": old.get("created", time.time()),
        "updated": time.time(),
        "counts": {
            "videos": videos.num_rows,
            "clips": clips.num_rows,
            "shards": len(set(videos["shard"].to_pylist())),
            "video_buckets": buckets,
            "clip_buckets": clip_buckets,
        },
        "hours": round(total_seconds / 3600.0, 6),
        "visual_tokens_stage3": int(pc.sum(videos["visual_tokens"]).as_py() or 0),
        "layers": list_layers(storage),
    }
    storage.write_bytes(DATASET_JSON, json.dumps(meta, indent=2, sort_keys=True).encode())
    return meta
