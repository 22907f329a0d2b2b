"""The result of ``longvid dedup-semantic`` as columns a ``where=`` filter can read: per clip
(``semantic_cluster``, ``semantic_duplicate_of``, ``semantic_duplicate_key``,
``semantic_similarity``) and per video (``semantic_duplicates``, ``semantic_duplicate_share``),
joined onto the index rows of one shard group at read time (Arrow joins, no Python per row).

The result lives in ``annotations/<layer>/<version>/semantic/<part>.parquet``, one file per part of
the embedding layer, named after its video shard (``<shard-base>-NNNN``), so a group reads only its
own shards' files. A clip the layer has no row for gets nulls (a null never passes a comparison).
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layers import layer_dir, split_layer_ref
from .storage import Storage

SEMANTIC_DIR = "semantic"  # under the embedding layer's version directory
MAX_PARTS_PER_SHARD = 10_000  # annotate's part numbers are 4 digits
RESULT_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("key", pa.string()),  # video key of the clip
    ("semantic_cluster", pa.int32()),  # k-means cluster of its embedding
    ("semantic_duplicate_of", pa.string()),  # clip id of the higher-ranked clip it repeats, or null (kept)
    ("semantic_duplicate_key", pa.string()),  # that clip's video key
    ("semantic_similarity", pa.float32()),  # cosine similarity to it (> 1 - eps), null when kept
])
CLIP_COLUMNS = tuple(RESULT_SCHEMA.names[2:])
VIDEO_COLUMNS = ("semantic_duplicates", "semantic_duplicate_share")  # of the video's embedded clips: count, share


def split_ref(value: str) -> tuple[str, str]:
    return split_layer_ref(value, "a semantic layer (an embedding layer)", "embed/v1")


def semantic_dir(ref: str) -> str:
    return f"{layer_dir(*split_ref(ref))}/{SEMANTIC_DIR}"


def check_semantic(storage: Storage, ref: str) -> dict:
    """The run's ``semantic.json``; a clear error when ``dedup-semantic`` never ran on ``ref``."""
    try:
        return json.loads(storage.read_bytes(f"{semantic_dir(ref)}/semantic.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no semantic near-duplicates for {ref} in {storage.root}: run "
                                f"`longvid dedup-semantic DATASET --layer {ref}` first") from None


def columns_for(unit: str) -> tuple[str, ...]:
    return CLIP_COLUMNS if unit == "clip" else VIDEO_COLUMNS


def _read_optional(storage: Storage, path: str) -> bytes | None:
    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # botocore's ClientError (NoSuchKey)
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def read_semantic(storage: Storage, ref: str, shards: list[str]) -> pa.Table:
    """The result rows of ``shards``' parts (``<shard-base>-0000``, ``-0001``, ... until one is missing)."""
    base, tables = semantic_dir(ref), []
    for shard in shards:
        stem = shard.rsplit("/", 1)[-1][: -len(".tar")]
        for number in range(MAX_PARTS_PER_SHARD):
            data = _read_optional(storage, f"{base}/{stem}-{number:04d}.parquet")
            if data is None:
                break
            tables.append(pq.read_table(io.BytesIO(data)).cast(RESULT_SCHEMA))
    return pa.concat_tables(tables) if tables else RESULT_SCHEMA.empty_table()


def with_clip_columns(clips: pa.Table, semantic: pa.Table) -> pa.Table:
    """``clips`` (with ``clip_id``) plus the per-clip columns; row order is not kept."""
    return clips.join(semantic.select(["clip_id", *CLIP_COLUMNS]), keys="clip_id", join_type="left outer")


def with_video_columns(videos: pa.Table, semantic: pa.Table) -> pa.Table:
    """``videos`` (with ``key``) plus how many of each video's embedded clips are duplicates, and
    which share; null for a video without embedded clips. Row order is not kept."""
    flagged = semantic.select(["key"]).append_column(
        "dup", pc.cast(pc.is_valid(semantic["semantic_duplicate_of"]), pa.int32()))
    per_video = flagged.group_by("key").aggregate([("dup", "sum"), ("dup", "count")])
    share = pc.cast(pc.divide(pc.cast(per_video["dup_sum"], pa.float64()), per_video["dup_count"]), pa.float32())
    counts = pa.table({"key": per_video["key"], "semantic_duplicates": pc.cast(per_video["dup_sum"], pa.int32()),
                       "semantic_duplicate_share": share})
    return videos.join(counts, keys="key", join_type="left outer")
