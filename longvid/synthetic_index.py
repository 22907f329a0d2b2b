"""Synthetic index parts in the real schemas, built vectorised (no Python object per row), for
benchmarks and tests at corpus scale (72 M clip rows in 30,000 shards). Empty media: each shard
is an empty stub file so tools that list the shards see it; nothing here decodes.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .shards.index import CLIP_SCHEMA, SHARD_BYTES_META, VIDEO_SCHEMA, conform, part_paths
from .shards.sampling import BUCKET_LABELS, DURATION_BUCKETS
from .shards.storage import Storage
from .shards.writer import shard_name

CLIP_SECONDS = 15.0  # the clip length the synthetic rows carry


def _strings(prefix: str, numbers: np.ndarray, width: int = 8) -> pa.Array:
    """``prefix + zero-padded hex`` for each number, in Arrow (no Python string per row)."""
    hexes = np.char.zfill(np.char.mod("%x", numbers), width) if len(numbers) else np.array([], dtype=str)
    return pc.binary_join_element_wise(pa.scalar(prefix), pa.array(hexes, pa.string()), "")


def _random_hex(count: int, nbytes: int, seed: int) -> pa.Array:
    """``count`` random hex strings of ``nbytes`` bytes (content hashes do not compress)."""
    raw = np.frombuffer(np.random.default_rng(seed).bytes(count * nbytes), np.uint8).reshape(count, nbytes)
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    chars = np.empty((count, 2 * nbytes), np.uint8)
    chars[:, 0::2], chars[:, 1::2] = digits[raw >> 4], digits[raw & 15]
    return pa.array(chars.view(f"S{2 * nbytes}").ravel(), pa.binary()).cast(pa.string())


def synthetic_part(number: int, videos: int, clips_per_video: int) -> tuple[pa.Table, pa.Table]:
    """(videos, clips) rows of shard ``number``: distinct keys, durations across the buckets."""
    shard = shard_name(number)
    v = np.arange(videos, dtype=np.int64)
    keys = _strings(f"{number:08x}", v)
    duration = (60.0 + (v * 997 + number * 31) % 7200).astype(np.float64)  # 1 min .. 2 h: several buckets
    edges = [bound for bound, _ in DURATION_BUCKETS[:-1]]
    labels = np.array(BUCKET_LABELS)[np.searchsorted(edges, duration, side="right")]
    n = videos
    video_cols = {
        "key": keys, "shard": pa.array([shard] * n, pa.string()),
        "media_member": pc.binary_join_element_wise(keys, pa.scalar(".mp4"), ""),
        "media_offset": pa.array(v * (1 << 20) + 1024), "media_size": pa.array(np.full(n, 1 << 20)),
        "json_offset": pa.array(v * (1 << 20) + 512), "json_size": pa.array(np.full(n, 9000)),
        "url": pc.binary_join_element_wise(pa.scalar("s3://bucket/src/"), keys, ""),
        "sha256": _random_hex(n, 32, seed=number),
        "duration": pa.array(duration), "fps": pa.array(np.full(n, 30.0)),
        "num_frames": pa.array((duration * 30).astype(np.int64)),
        "width": pa.array(np.full(n, 1280, np.int32)), "height": pa.array(np.full(n, 720, np.int32)),
        "codec": pa.array(["h264"] * n), "container": pa.array(["mp4"] * n),
        "has_audio": pa.array(np.ones(n, bool)), "bucket": pa.array(labels.tolist() if n else [], pa.string()),
        "num_shots": pa.array(np.full(n, 50, np.int32)), "num_clips": pa.array(np.full(n, clips_per_video, np.int32)),
        "stage3_frames": pa.array(np.full(n, 512, np.int32)), "visual_tokens": pa.array(np.full(n, 8192)),
        "status": pa.array(["ok"] * n),
    }
    c = np.arange(videos * clips_per_video, dtype=np.int64)
    owner = c // max(clips_per_video, 1)
    within = c % max(clips_per_video, 1)
    start = within * CLIP_SECONDS
    clip_keys = keys.take(pa.array(owner)) if len(c) else pa.array([], pa.string())
    m = len(c)
    clip_cols = {
        "clip_id": pc.binary_join_element_wise(clip_keys, _strings("_", within * 15000, 9), ""),
        "key": clip_keys, "shard": pa.array([shard] * m, pa.string()),
        "start": pa.array(start), "end": pa.array(start + CLIP_SECONDS),
        "start_frame": pa.array(within * 450), "end_frame": pa.array(within * 450 + 450),
        "duration": pa.array(np.full(m, CLIP_SECONDS)), "bucket": pa.array([BUCKET_LABELS[0]] * m, pa.string()),
        "num_keyframes": pa.array(np.full(m, 4, np.int32)), "stage3_frames": pa.array(np.full(m, 64, np.int32)),
        "visual_tokens": pa.array(np.full(m, 1024)),
    }
    # curation columns (motion_score, phash, near_duplicate_*) stay null, as for an index without them
    return conform(pa.table(video_cols), VIDEO_SCHEMA), conform(pa.table(clip_cols), CLIP_SCHEMA)


def write_synthetic_shard(storage: Storage, number: int, videos: int, clips_per_video: int,
                          stub_bytes: int = 2 << 30) -> None:
    """One shard's stub tar and index part, written as ``write_index_part`` writes them."""
    shard = shard_name(number)
    vt, ct = synthetic_part(number, videos, clips_per_video)
    storage.write_bytes(shard, b"")  # stub: listed like a shard, never read
    vpath, cpath = part_paths(shard)
    for table, path in ((ct, cpath), (vt.replace_schema_metadata({SHARD_BYTES_META: str(stub_bytes).encode()}), vpath)):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(path, buf.getvalue())


def write_synthetic_summary_layer(storage: Storage, shards: int, videos: int, layer: str = "summary",
                                  version: str = "v1") -> int:
    """A video-level summary layer over every video of ``shards`` synthetic shards of ``videos``
    videos each, as one part (what ``export`` needs to build a conversation); returns its rows."""
    from .shards.layers import LAYER_SCHEMA, layer_dir, write_layer_meta

    numbers = np.repeat(np.arange(shards, dtype=np.int64), videos)
    within = np.tile(np.arange(videos, dtype=np.int64), shards)
    keys = pc.binary_join_element_wise(_strings("", numbers), _strings("", within), "")
    n = len(keys)
    value = '{"task": "summary", "text": "a synthetic summary"}'
    table = pa.table({
        "key": keys, "clip_id": pa.nulls(n, pa.string()), "start": pa.array(np.zeros(n)),
        "end": pa.array(np.full(n, 60.0)), "value": pa.array(np.full(n, value, dtype=object), pa.string()),
        "value_type": pa.array(np.full(n, "json", dtype=object), pa.string()),
        "producer": pa.array(np.full(n, "synthetic", dtype=object), pa.string()),
    }).cast(LAYER_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(f"{layer_dir(layer, version)}/part-0.parquet", buf.getvalue())
    write_layer_meta(storage, layer, version, {"producer": "synthetic", "status": "complete"})
    return n
