"""The dataset catalog: a shard table plus a compacted, partitioned index that opens in O(shards).

Layout (under the dataset root)::

    index/parts/shard-NNNNNN.{videos,clips}.parquet   write path: one pair per committed shard
    index/videos/<first>+<count>-<hash>.parquet        compacted: a batch of shards, immutable
    index/clips/<first>+<count>-<hash>.parquet
    index/shards.parquet                               the shard table (written last, atomically)

Contract (what readers such as the training stream may rely on):

* ``open_index(storage)`` reads only ``index/shards.parquet`` (one GET on S3). A dataset with parts
  but no shard table (written before this layout) still opens: the table is built in memory from
  the parts with a one-line warning telling the user to run ``longvid index DATASET``.
* ``DatasetIndex.shards`` is a ``pa.Table`` with one row per committed shard, sorted by ``shard``,
  columns :data:`SHARD_TABLE_SCHEMA`: ``shard`` (``videos/shard-NNNNNN.tar``), ``bytes``,
  ``videos``, ``ok_videos``, ``clips``, ``seconds`` (sum of ok video durations), ``clip_seconds``,
  ``visual_tokens`` (stage 3, ok videos), ``clip_visual_tokens``, ``video_buckets`` /
  ``clip_buckets`` (``list<int64>`` in :data:`BUCKET_LABELS` order), ``min_key``, ``max_key``,
  ``videos_file`` / ``clips_file`` (where the shard's rows live: a compacted file or its part).
* ``read_videos(shards, columns, filter)`` / ``read_clips(...)`` read only the files holding those
  shards, with projection and a ``shard in [...]`` pushdown, and return rows sorted by
  ``(shard, key)`` for videos and ``(shard, key, start)`` for clips. Shards not in the table give
  no rows. ``videos_dataset()`` / ``clips_dataset()`` are ``pyarrow.dataset.Dataset`` objects over
  every file of the table, for dataset-wide scans (``to_batches(columns=[...])``).
* Files named by the table are never rewritten in place, so a reader holding an older table keeps
  working while a writer compacts. One writer at a time (ingest's finalize or ``longvid index``).

Never builds a Python object per index row; dataset-wide work stays in Arrow.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .index import CLIP_SCHEMA, INDEX_DIR, PARTS_DIR, SHARD_BYTES_META, VIDEO_SCHEMA, conform, part_paths
from .sampling import BUCKET_LABELS
from .storage import LocalStorage, S3Storage, Storage
from .writer import SHARD_DIR

log = logging.getLogger(__name__)

SHARD_TABLE = f"{INDEX_DIR}/shards.parquet"
COMPACT_VIDEOS_DIR = f"{INDEX_DIR}/videos"
COMPACT_CLIPS_DIR = f"{INDEX_DIR}/clips"
LEGACY_FILES = (f"{INDEX_DIR}/videos.parquet", f"{INDEX_DIR}/clips.parquet")

REINDEX_HINT = "run `longvid index DATASET`"

SHARD_TABLE_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("bytes", pa.int64()),
        ("videos", pa.int64()),
        ("ok_videos", pa.int64()),
        ("clips", pa.int64()),
        ("ok_clips", pa.int64()),  # clips of ok videos: the clip samples a stream can deliver
        ("seconds", pa.float64()),
        ("clip_seconds", pa.float64()),
        ("visual_tokens", pa.int64()),
        ("clip_visual_tokens", pa.int64()),
        ("video_buckets", pa.list_(pa.int64())),
        ("clip_buckets", pa.list_(pa.int64())),
        ("video_bucket_seconds", pa.list_(pa.float64())),
        ("clip_bucket_seconds", pa.list_(pa.float64())),
        ("min_key", pa.string()),
        ("max_key", pa.string()),
        ("videos_file", pa.string()),
        ("clips_file", pa.string()),
    ]
)
VIDEO_ORDER = [("shard", "ascending"), ("key", "ascending")]
CLIP_ORDER = [("shard", "ascending"), ("key", "ascending"), ("start", "ascending")]


@dataclass
class CompactConfig:
    # Shards merged into one compacted file: 256 shards of ~2,400 clips (LongVid) is ~600 k clip rows,
    # tens of MB per file and ~120 files at 30,000 shards; fewer parts are left as they are until a
    # batch fills (so a run adding one shard rewrites nothing and writes no tiny file).
    shards_per_file: int = 256
    # Rows per Parquet row group of a compacted file: small enough that a ``shard`` predicate skips
    # most of a file (a row group spans ~10 LongVid shards of clips), big enough to scan fast.
    row_group_rows: int = 32768
    # Also compact a trailing batch smaller than ``shards_per_file`` (``longvid index --all``).
    compact_remainder: bool = False


@dataclass
class IndexReport:
    compacted_files: list[str] = field(default_factory=list)  # new compacted files written
    added: int = 0  # shards new to the shard table
    repaired: list[str] = field(default_factory=list)  # shards whose part was rebuilt from the tar
    dropped: list[str] = field(default_factory=list)  # shards gone from storage, removed from the index
    cleaned: list[str] = field(default_factory=list)  # leftovers deleted (killed runs, old layout)
    shards: int = 0  # shards in the table afterwards


# -- Arrow filesystem ------------------------------------------------------------------------
_FS_CACHE: dict[tuple, object] = {}


def arrow_filesystem(storage: Storage):
    """(pyarrow filesystem, base path) for a storage; S3 credentials from boto3's chain, never logged.

    Built lazily per process (pyarrow's S3 client must not cross a fork).
    """
    import pyarrow.fs as pafs

    if isinstance(storage, LocalStorage):
        return pafs.LocalFileSystem(), storage.root
    if not isinstance(storage, S3Storage):
        raise TypeError(f"no Arrow filesystem for {type(storage).__name__}")
    base = f"{storage.bucket}/{storage.prefix}".rstrip("/")
    cache_key = (os.getpid(), storage.bucket)
    if cache_key not in _FS_CACHE:
        import boto3

        session = boto3.Session()
        creds = session.get_credentials()
        kwargs = {"region": session.region_name or "us-east-1"}
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key,
                          session_token=frozen.token)
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:  # pyarrow ignores AWS_ENDPOINT_URL (ENVIRONMENT.md)
            parts = urlsplit(endpoint)
            kwargs.update(endpoint_override=parts.netloc or parts.path, scheme=parts.scheme or "https")
        _FS_CACHE[cache_key] = pafs.S3FileSystem(**kwargs)
    return _FS_CACHE[cache_key], base


def _read_optional(storage: Storage, path: str) -> bytes | None:
    """The object's bytes, or None when absent (one request either way)."""
    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # botocore's ClientError: NoSuchKey
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def _parquet(storage: Storage, path: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(path)))


def _write_parquet(storage: Storage, path: str, table: pa.Table, row_group_rows: int | None = None) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_rows)
    storage.write_bytes(path, buf.getvalue())


# -- per-shard summaries ---------------------------------------------------------------------
def _per_bucket(table: pa.Table) -> tuple[list[int], list[float]]:
    """(rows, seconds) per duration bucket in BUCKET_LABELS order (one Arrow group-by)."""
    counts, seconds = dict.fromkeys(BUCKET_LABELS, 0), dict.fromkeys(BUCKET_LABELS, 0.0)
    grouped = table.group_by("bucket").aggregate([("duration", "count"), ("duration", "sum")])
    for item in grouped.to_pylist():  # one entry per bucket label: bounded
        counts[item["bucket"]] = item["duration_count"]
        seconds[item["bucket"]] = float(item["duration_sum"] or 0.0)
    return [counts[label] for label in BUCKET_LABELS], [seconds[label] for label in BUCKET_LABELS]


def _sum(column, kind=int):
    value = pc.sum(column).as_py()
    return kind(value or 0)


def summarise_shard(shard: str, videos: pa.Table, clips: pa.Table, shard_bytes: int,
                    videos_file: str, clips_file: str) -> dict:
    """The shard-table row of one shard from its video and clip rows (Arrow aggregates only)."""
    ok = videos.filter(pc.equal(videos["status"], "ok"))
    ok_clips = clips.filter(pc.is_in(clips["key"], value_set=ok["key"].combine_chunks()))
    keys = videos["key"]
    # per-bucket figures count samples a reader can deliver: ok videos and their clips
    video_counts, video_seconds = _per_bucket(ok.select(["bucket", "duration"]))
    clip_counts, clip_seconds = _per_bucket(ok_clips.select(["bucket", "duration"]))
    return {
        "shard": shard,
        "bytes": int(shard_bytes),
        "videos": videos.num_rows,
        "ok_videos": ok.num_rows,
        "clips": clips.num_rows,
        "ok_clips": ok_clips.num_rows,
        "seconds": _sum(ok["duration"], float),
        "clip_seconds": _sum(ok_clips["duration"], float),
        "visual_tokens": _sum(ok["visual_tokens"]),
        "clip_visual_tokens": _sum(ok_clips["visual_tokens"]),
        "video_buckets": video_counts,
        "clip_buckets": clip_counts,
        "video_bucket_seconds": video_seconds,
        "clip_bucket_seconds": clip_seconds,
        "min_key": pc.min(keys).as_py() if len(keys) else "",
        "max_key": pc.max(keys).as_py() if len(keys) else "",
        "videos_file": videos_file,
        "clips_file": clips_file,
    }


def read_part(storage: Storage, shard: str) -> tuple[pa.Table, pa.Table, int]:
    """(videos, clips, shard bytes) of one shard's index part."""
    vpath, cpath = part_paths(shard)
    vbuf = storage.read_bytes(vpath)
    videos = pq.read_table(io.BytesIO(vbuf))
    meta = videos.schema.metadata or {}
    shard_bytes = int(meta[SHARD_BYTES_META]) if SHARD_BYTES_META in meta else storage.size(shard)
    clips = conform(_parquet(storage, cpath), CLIP_SCHEMA)  # parts written before a column was added: nulls
    return conform(videos.replace_schema_metadata(None), VIDEO_SCHEMA), clips, shard_bytes


def _part_shards(storage: Storage) -> list[str]:
    """Shards whose index part is whole (the videos part is written last)."""
    prefix, suffix = f"{PARTS_DIR}/", ".videos.parquet"
    return sorted(f"{SHARD_DIR}/{p[len(prefix):-len(suffix)]}.tar"
                  for p in storage.list(PARTS_DIR) if p.endswith(suffix))


def _table(rows: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=SHARD_TABLE_SCHEMA) if rows else SHARD_TABLE_SCHEMA.empty_table()
    return table.sort_by("shard")


def shard_table_from_parts(storage: Storage) -> pa.Table:
    """The shard table of a dataset that has parts only (reads every part: O(shards) GETs)."""
    rows = []
    for shard in _part_shards(storage):
        videos, clips, size = read_part(storage, shard)
        rows.append(summarise_shard(shard, videos, clips, size, *part_paths(shard)))
    return _table(rows)


# -- reading -----------------------------------------------------------------------------------
class DatasetIndex:
    """The index of one dataset, opened from its shard table. See the module docstring."""

    def __init__(self, storage: Storage, shards: pa.Table):
        self.storage = storage
        self.shards = shards

    @property
    def shard_names(self) -> list[str]:
        return self.shards["shard"].to_pylist()  # one string per shard: O(shards)

    def _files(self, column: str, shards: list[str] | None) -> list[str]:
        table = self.shards
        if shards is not None:
            table = table.filter(pc.is_in(table["shard"], pa.array(shards, pa.string())))
        return pc.unique(table[column]).to_pylist()  # one string per file

    def _dataset(self, files: list[str], schema: pa.Schema) -> ds.Dataset:
        fs, base = arrow_filesystem(self.storage)
        paths = [f"{base}/{f}" for f in sorted(files)]
        # from_paths inspects nothing: no request per file until a scan reads it
        return ds.FileSystemDataset.from_paths(paths, schema=schema, format=ds.ParquetFileFormat(),
                                               filesystem=fs)

    def videos_dataset(self) -> ds.Dataset:
        return self._dataset(self._files("videos_file", None), VIDEO_SCHEMA)

    def clips_dataset(self) -> ds.Dataset:
        return self._dataset(self._files("clips_file", None), CLIP_SCHEMA)

    def _read(self, kind: str, shards: list[str], columns, filter, schema, order) -> pa.Table:
        shards = list(shards)
        files = self._files(f"{kind}_file", shards)
        if not files:
            table = schema.empty_table()
            return table.select(list(columns)) if columns is not None else table
        predicate = pc.field("shard").isin(pa.array(shards, pa.string()))
        if filter is not None:
            predicate = predicate & filter
        sort_cols = [name for name, _ in order]
        wanted = list(columns) if columns is not None else schema.names
        read_cols = wanted + [c for c in sort_cols if c not in wanted]
        try:
            table = self._dataset(files, schema).to_table(columns=read_cols, filter=predicate)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            table = self._read_drifted(files, schema, read_cols, predicate, exc)
        return table.sort_by(order).select(wanted)

    def _read_drifted(self, files: list[str], schema: pa.Schema, columns: list[str], predicate, exc) -> pa.Table:
        """A file whose stored types do not cast (schema drift, a hostile part): read these files one
        by one; a column that will not cast is null in that file's rows, which the readers' row
        checks (validate.py) then reject by name. Bounded: the files of one read."""
        from .validate import conform_rows

        tables = []
        for path in sorted(files):
            try:
                stored = pq.read_table(io.BytesIO(self.storage.read_bytes(path)))
            except pa.ArrowInvalid as bad:  # not Parquet at all: its rows are skipped, the file named
                log.warning("%s is not a readable index file (%s); its rows are skipped: %s",
                            self.storage.uri(path), bad, REINDEX_HINT)
                continue
            table, reasons = conform_rows(stored.replace_schema_metadata(None), schema)
            if reasons.null_count < len(reasons):
                log.warning("%s: %s; its rows are read with that column null (%s)", self.storage.uri(path),
                            reasons.drop_null()[0].as_py(), exc)
            tables.append(table.filter(predicate).select(columns))
        return pa.concat_tables(tables) if tables else schema.empty_table().select(columns)

    def read_videos(self, shards, columns: list[str] | None = None, filter: pc.Expression | None = None) -> pa.Table:
        """Video rows of ``shards``, sorted by (shard, key)."""
        return self._read("videos", shards, columns, filter, VIDEO_SCHEMA, VIDEO_ORDER)

    def read_clips(self, shards, columns: list[str] | None = None, filter: pc.Expression | None = None) -> pa.Table:
        """Clip rows of ``shards``, sorted by (shard, key, start)."""
        return self._read("clips", shards, columns, filter, CLIP_SCHEMA, CLIP_ORDER)

    def sample_counts(self, unit: str, buckets: list[str] | None = None) -> np.ndarray:
        """Samples per shard (table order) of ``unit`` ("video" | "clip": ok videos, clips of ok
        videos) whose duration bucket is in ``buckets`` (labels; None or empty: all), from the
        shard table alone."""
        if unit not in ("video", "clip"):
            raise ValueError(f"unit must be video or clip, got {unit!r}")
        column = self.shards["video_buckets" if unit == "video" else "clip_buckets"]
        if len(column) == 0:
            return np.zeros(0, dtype=np.int64)
        flat = pa.concat_arrays([chunk.flatten() for chunk in column.chunks]).to_numpy(zero_copy_only=False)
        matrix = flat.reshape(len(column), len(BUCKET_LABELS))
        if buckets:
            unknown = sorted(set(buckets) - set(BUCKET_LABELS))
            if unknown:
                raise ValueError(f"unknown duration bucket(s) {unknown}; known: {list(BUCKET_LABELS)}")
            matrix = matrix[:, [BUCKET_LABELS.index(label) for label in buckets]]
        return matrix.sum(axis=1).astype(np.int64)

    def read_all(self) -> tuple[pa.Table, pa.Table]:
        """Every video and clip row: for small datasets and tests only (O(rows) memory)."""
        names = self.shard_names
        return self.read_videos(names), self.read_clips(names)


def open_index(storage: Storage) -> DatasetIndex:
    """Open a dataset's index from its shard table (one read); see the module docstring."""
    data = _read_optional(storage, SHARD_TABLE)
    if data is not None:
        return DatasetIndex(storage, pq.read_table(io.BytesIO(data)).cast(SHARD_TABLE_SCHEMA))
    table = shard_table_from_parts(storage)
    if table.num_rows:
        log.warning("%s has no shard table (older layout); opening from its %d index parts is slow: %s",
                    storage.root, table.num_rows, REINDEX_HINT)
    return DatasetIndex(storage, table)
