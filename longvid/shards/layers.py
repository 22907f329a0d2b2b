"""Annotation layers: ``annotations/<layer>/<version>/`` beside the video shards, never in them.

A layer version holds Parquet parts (one per writer flush, named by the caller so reruns are
idempotent) of rows keyed by video key and, for clip-level values, clip id; ``layer.json``
records who produced it. Many versions of one layer coexist; readers pick one.
"""

from __future__ import annotations

import io
import json
import re
import time

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import Storage

ANNOTATIONS_DIR = "annotations"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

LAYER_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # video key (video id)
        ("clip_id", pa.string()),  # null for a video-level value
        ("start", pa.float64()),  # span in seconds (the clip's, or 0..duration)
        ("end", pa.float64()),
        ("value", pa.string()),  # text, or JSON when value_type == "json"
        ("value_type", pa.string()),  # "text" | "json"
        ("producer", pa.string()),  # producer id: a hash of model, prompt and parameters
    ]
)


def check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise ValueError(f"invalid {kind} name {name!r}: use letters, digits, '_', '-', '.' (max 64)")
    return name


def layer_dir(layer: str, version: str) -> str:
    return f"{ANNOTATIONS_DIR}/{check_name('layer', layer)}/{check_name('version', version)}"


def write_layer_part(storage: Storage, layer: str, version: str, part: str, rows: list[dict]) -> str:
    """Write one part atomically; ``part`` is a deterministic name (e.g. the video shard's)."""
    check_name("part", part)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=LAYER_SCHEMA), buf)
    path = f"{layer_dir(layer, version)}/{part}.parquet"
    storage.write_bytes(path, buf.getvalue())
    return path


def layer_parts(storage: Storage, layer: str, version: str) -> list[str]:
    base = layer_dir(layer, version)
    return [p for p in storage.list(base) if p.endswith(".parquet") and p.count("/") == base.count("/") + 1]


def read_layer(storage: Storage, layer: str, version: str) -> pa.Table:
    parts = layer_parts(storage, layer, version)
    if not parts:
        raise FileNotFoundError(f"no annotation layer {layer}/{version} in {storage.root}")
    from .validate import valid_layer_rows  # hostile or drifted rows are left out and named, never fatal

    tables = [valid_layer_rows(pq.read_table(io.BytesIO(storage.read_bytes(p))), f"{layer}/{version} part {p}")
              for p in parts]
    return pa.concat_tables(tables)


def write_layer_meta(storage: Storage, layer: str, version: str, meta: dict) -> None:
    """``layer.json``: producer metadata (model, prompt hash, parameters, engine) and counts."""
    content = dict(meta, layer=layer, version=version, updated=time.time())
    storage.write_bytes(f"{layer_dir(layer, version)}/layer.json", json.dumps(content, indent=2, sort_keys=True).encode())


def read_layer_meta(storage: Storage, layer: str, version: str) -> dict:
    return json.loads(storage.read_bytes(f"{layer_dir(layer, version)}/layer.json"))
