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
    try:
        meta = json.loads(storage.read_bytes(DATASET_JSON))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{storage.uri(DATASET_JSON)} is not valid JSON ({exc}); rerun ingest to rewrite it") from None
    check_dataset_json(meta, storage.uri(DATASET_JSON))
    if meta.get("schema_version", 0) > SCHEMA_VERSION:
        raise DatasetError(
            f"{storage.root} has schema version {meta['schema_version']}; this longvid reads up to {SCHEMA_VERSION}"
        )
    return meta


def _bad(where: str, field: str, want: str, value) -> DatasetError:
    return DatasetError(f"{where}: field {field!r} should be {want}, found {type(value).__name__} {value!r:.60}; "
                        "rerun `longvid ingest` on the dataset to rewrite it")


def check_dataset_json(meta, where: str) -> None:
    """Every field a reader uses has the type it expects; the first that does not is named."""
    if not isinstance(meta, dict):
        raise _bad(where, "(top level)", "an object", meta)
    number = (int, float)
    if not isinstance(meta.get("schema_version", 0), int) or isinstance(meta.get("schema_version", 0), bool):
        raise _bad(where, "schema_version", "an integer", meta.get("schema_version"))
    for name in ("hours", "visual_tokens_stage3", "created", "updated"):
        if name in meta and (not isinstance(meta[name], number) or isinstance(meta[name], bool)):
            raise _bad(where, name, "a number", meta[name])
    counts = meta.get("counts", {})
    if not isinstance(counts, dict):
        raise _bad(where, "counts", "an object", counts)
    for name, value in counts.items():
        if name.endswith("_buckets"):
            if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
                raise _bad(where, f"counts.{name}", "an object of integers", value)
        elif not isinstance(value, int) or isinstance(value, bool):
            raise _bad(where, f"counts.{name}", "an integer", value)
    layers = meta.get("layers", {})
    if not isinstance(layers, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in layers.values()):
        raise _bad(where, "layers", "an object of version lists", layers)


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
    try:  # a damaged dataset.json is rewritten from the index, which is the truth
        old = json.loads(storage.read_bytes(DATASET_JSON)) if storage.exists(DATASET_JSON) else {}
        old = old if isinstance(old, dict) and isinstance(old.get("created"), (int, float)) else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = {}
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
