"""Annotation layers: ``annotations/<layer>/<version>/`` beside the video shards, never in them.

A layer version holds Parquet parts (one per writer flush, named by the caller so reruns are
idempotent) of rows keyed by video key and, for clip-level values, clip id; ``layer.json``
records who produced it. Many versions of one layer coexist; readers pick one.

Beside each part, ``failures/<part>.parquet`` lists the items of that part that failed or were
rejected (key, clip id, stage, reason, whether a retry may fill it): the source of a version's
status, of ``stats``' failures by reason, and of ``annotate --retry-failed``. It is written after
its part, so a part without one reads as having no failures.
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


FAILURE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # video key
        ("clip_id", pa.string()),  # the failed clip; null when the whole video failed or for a video-level item
        ("stage", pa.string()),  # read | decode | caption | speech | a QA family | summary ...
        ("reason", pa.string()),
        ("retry", pa.bool_()),  # an item that produced nothing (a retry may fill it), not a QA item the checks refuted
    ]
)


def check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise ValueError(f"invalid {kind} name {name!r}: use letters, digits, '_', '-', '.' (max 64)")
    return name


def split_layer_ref(value, name: str = "a layer", example: str = "caption/v1") -> tuple[str, str]:
    """``"caption/v1"`` → ``("caption", "v1")``; ``name`` (a flag, or what the ref is) is in the error."""
    layer, sep, version = str(value or "").partition("/")
    if not sep or not layer or not version or "/" in version:
        raise ValueError(f"{name} must be LAYER/VERSION (for example {example}), got {value!r}")
    return layer, version


def layer_dir(layer: str, version: str) -> str:
    return f"{ANNOTATIONS_DIR}/{check_name('layer', layer)}/{check_name('version', version)}"


def write_layer_part(storage: Storage, layer: str, version: str, part: str, rows: list[dict],
                     schema: pa.Schema = LAYER_SCHEMA) -> str:
    """Write one part atomically (a new file, then a rename: a reader or a kill sees the old
    part or the new one, never half); ``part`` is a deterministic name (e.g. the video shard's)."""
    return _write_part(storage, f"{layer_dir(layer, version)}/{check_name('part', part)}.parquet", rows, schema)


def write_failures_part(storage: Storage, layer: str, version: str, part: str, rows: list[dict]) -> str:
    """The failures of one part, written after the part itself (atomically, like it)."""
    return _write_part(storage, f"{layer_dir(layer, version)}/failures/{check_name('part', part)}.parquet", rows,
                       FAILURE_SCHEMA)


def _write_part(storage: Storage, path: str, rows: list[dict], schema: pa.Schema) -> str:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    storage.write_bytes(path, buf.getvalue())  # a temporary name, then a rename (or one S3 PUT)
    return path


def failure_parts(storage: Storage, layer: str, version: str) -> list[str]:
    base = f"{layer_dir(layer, version)}/failures"
    return [p for p in storage.list(base) if p.endswith(".parquet")]


def read_failures(storage: Storage, layer: str, version: str, part: str | None = None) -> pa.Table:
    """The failure rows of a version (or of one part); empty for versions written before they existed.
    Bounded by the failures, not the layer: a caller may ``to_pylist`` a filtered slice."""
    paths = failure_parts(storage, layer, version)
    if part is not None:
        paths = [p for p in paths if p.rsplit("/", 1)[-1] == f"{part}.parquet"]
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(p))).cast(FAILURE_SCHEMA) for p in paths]
    return pa.concat_tables(tables) if tables else FAILURE_SCHEMA.empty_table()


def part_path(layer: str, version: str, part: str) -> str:
    return f"{layer_dir(layer, version)}/{check_name('part', part)}.parquet"


def read_layer_part(storage: Storage, layer: str, version: str, part: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(part_path(layer, version, part))))


def read_layer_rows(storage: Storage, layer: str, version: str, keys: list[str]) -> pa.Table:
    """The rows of ``keys`` only, part by part (Parquet filter): what one run's videos need."""
    import pyarrow.compute as pc

    parts = layer_parts(storage, layer, version)
    if not parts:
        raise FileNotFoundError(f"no annotation layer {layer}/{version} in {storage.root}")
    wanted = pa.array(sorted(set(keys)), pa.string())
    tables = [t.filter(pc.is_in(t["key"], wanted)) for t in
              (pq.read_table(io.BytesIO(storage.read_bytes(p))).cast(LAYER_SCHEMA) for p in parts)]
    return pa.concat_tables(tables)


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


def _part_columns(storage: Storage, path: str, columns: list[str]) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(path)), columns=columns)


def status_text(failed: int, total: int, partial: bool) -> str:
    """``partial`` (parts missing), ``complete``, or ``complete with N failures (x %)``."""
    if partial:
        return "partial"
    if failed == 0:
        return "complete"
    return f"complete with {failed} failures ({100.0 * failed / max(total, 1):.1f} %)"


def version_status(storage: Storage, layer: str, version: str, planned_parts: int | None = None,
                   item_level: str | None = None) -> dict:
    """What a version holds and how honestly complete it is, with Arrow over its parts.

    Items are clips for a clip-level layer and videos for a video-level one (``item_level``; else
    guessed from the rows). ``partial``: fewer parts than planned.
    """
    import pyarrow.compute as pc

    clip_rows = rows = videos = 0
    parts = layer_parts(storage, layer, version)
    for path in parts:
        table = _part_columns(storage, path, ["key", "clip_id"])
        rows += table.num_rows
        clip_rows += table.num_rows - table["clip_id"].null_count
        videos += pc.count_distinct(table["key"]).as_py()  # a video lies in one part
    failures = read_failures(storage, layer, version)
    retry = failures.filter(pc.field("retry"))
    clip_level = item_level == "clip" if item_level else (clip_rows > 0 or retry["clip_id"].null_count < retry.num_rows)
    if clip_level:
        ok, failed = clip_rows, retry.num_rows
    else:
        ok, failed = videos, pc.count_distinct(retry["key"]).as_py() if retry.num_rows else 0
    partial = planned_parts is not None and len(parts) < planned_parts
    return {"status": status_text(failed, ok + failed, partial), "unit": "clips" if clip_level else "videos",
            "ok_items": ok, "failed_items": failed, "rejected_items": failures.num_rows - retry.num_rows,
            "rows": rows, "clip_rows": clip_rows, "videos": videos, "parts": len(parts),
            "planned_parts": planned_parts}
