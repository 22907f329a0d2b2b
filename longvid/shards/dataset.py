"""``dataset.json``: the dataset's summary and the list of annotation layers present.

Written last by every run (after shards, index and ledger), so it always describes committed
state. Readers check ``schema_version`` and refuse a newer one.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.compute as pc

from .catalog import CompactConfig, open_index
from .compact import update_index
from .sampling import BUCKET_LABELS
from .schema import SCHEMA_VERSION
from .storage import Storage

DATASET_JSON = "dataset.json"
ANNOTATIONS_DIR = "annotations"


class DatasetError(ValueError):
    pass


class DamagedDatasetJson(DatasetError):
    """``dataset.json`` exists but is not JSON or has wrong types: ``longvid index`` rewrites it."""


REWRITE_HINT = "run `longvid index DATASET` to rewrite it from the index (or rerun `longvid ingest`)"


def read_dataset_json(storage: Storage) -> dict:
    if not storage.exists(DATASET_JSON):
        raise DatasetError(f"{storage.root} is not a LongVid dataset (no {DATASET_JSON})")
    try:
        meta = json.loads(storage.read_bytes(DATASET_JSON))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedDatasetJson(f"{storage.uri(DATASET_JSON)} is not valid JSON ({exc}); {REWRITE_HINT}") from None
    check_dataset_json(meta, storage.uri(DATASET_JSON))
    if meta.get("schema_version", 0) > SCHEMA_VERSION:
        raise DatasetError(
            f"{storage.root} has schema version {meta['schema_version']}; this longvid reads up to {SCHEMA_VERSION}"
        )
    return meta


def _bad(where: str, field: str, want: str, value) -> DatasetError:
    return DamagedDatasetJson(f"{where}: field {field!r} should be {want}, found {type(value).__name__} "
                              f"{value!r:.60}; {REWRITE_HINT}")


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


def bucket_totals(column: pa.ChunkedArray, kind=int) -> dict:
    """Per-bucket sums of a list column in BUCKET_LABELS order (one row per shard), vectorised."""
    if len(column) == 0:
        return {label: kind(0) for label in BUCKET_LABELS}
    flat = pa.concat_arrays([chunk.flatten() for chunk in column.chunks]).to_numpy(zero_copy_only=False)
    sums = flat.reshape(len(column), len(BUCKET_LABELS)).sum(axis=0)
    return {label: kind(n) for label, n in zip(BUCKET_LABELS, sums)}


def summary_counts(shards: pa.Table) -> dict:
    """``dataset.json``'s counts, hours and tokens from the shard table (Arrow, O(shards))."""
    return {
        "counts": {
            "videos": int(pc.sum(shards["videos"]).as_py() or 0),
            "clips": int(pc.sum(shards["clips"]).as_py() or 0),
            "shards": int(pc.sum(pc.greater(shards["videos"], 0).cast(pa.int64())).as_py() or 0),
            "video_buckets": bucket_totals(shards["video_buckets"]),
            "clip_buckets": bucket_totals(shards["clip_buckets"]),
        },
        "hours": round(float(pc.sum(shards["seconds"]).as_py() or 0.0) / 3600.0, 6),
        "visual_tokens_stage3": int(pc.sum(shards["visual_tokens"]).as_py() or 0),
    }


def finalize(storage: Storage, config: CompactConfig | None = None, repair: bool = False) -> dict:
    """Bring the index up to date with the parts this run added, then (re)write ``dataset.json``.

    Costs what the run added: new parts are summarised (and compacted when a batch fills); the
    counts come from the shard table. ``repair`` (``longvid index``) also rebuilds missing parts
    and drops shards gone from storage. Returns ``dataset.json``'s content.
    """
    update_index(storage, config, repair=repair)
    return write_dataset_json(storage)


def write_dataset_json(storage: Storage) -> dict:
    """(Re)write ``dataset.json`` from the shard table and the layers present; returns it."""
    shards = open_index(storage).shards
    try:  # a damaged dataset.json is rewritten from the index, which is the truth
        old = json.loads(storage.read_bytes(DATASET_JSON)) if storage.exists(DATASET_JSON) else {}
        old = old if isinstance(old, dict) and isinstance(old.get("created"), (int, float)) else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = {}
    meta = {
        "schema_version": SCHEMA_VERSION,
        "format": "longvid-webdataset",
        "created": old.get("created", time.time()),
        "updated": time.time(),
        **summary_counts(shards),
        "layers": list_layers(storage),
    }
    storage.write_bytes(DATASET_JSON, json.dumps(meta, indent=2, sort_keys=True).encode())
    return meta
