"""The index: per-video and per-clip tables that say where every video's bytes lie in the shards.

Each committed shard gets an index part (``index/parts/shard-NNNNNN.{videos,clips}.parquet``)
written right after the shard is published: the write path. ``catalog`` (reading) and
``compact`` (merging parts into batch files and the shard table) build on it. A shard without a
part (the run died between the two writes) gets its part rebuilt from the shard itself.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from .reader import iter_shard
from .storage import Storage
from .writer import SHARD_DIR, CommittedShard, WrittenSample

INDEX_DIR = "index"
PARTS_DIR = f"{INDEX_DIR}/parts"
SHARD_BYTES_META = b"longvid.shard_bytes"  # key-value metadata of a videos part: the shard's size

VIDEO_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("media_member", pa.string()),
        ("media_offset", pa.int64()),
        ("media_size", pa.int64()),
        ("json_offset", pa.int64()),
        ("json_size", pa.int64()),
        ("url", pa.string()),
        ("sha256", pa.string()),
        ("duration", pa.float64()),
        ("fps", pa.float64()),
        ("num_frames", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("codec", pa.string()),
        ("container", pa.string()),
        ("has_audio", pa.bool_()),
        ("bucket", pa.string()),
        ("num_shots", pa.int32()),
        ("num_clips", pa.int32()),
        ("stage3_frames", pa.int32()),
        ("visual_tokens", pa.int64()),  # at stage 3 (the joint long/short stage)
        ("status", pa.string()),
        ("near_duplicate_of", pa.string()),  # key of the earlier video most of whose clips this one repeats, or null
        ("near_duplicate_distance", pa.int32()),  # median pHash distance of those clips
    ]
)

CLIP_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("key", pa.string()),
        ("shard", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),  # exclusive
        ("duration", pa.float64()),
        ("bucket", pa.string()),
        ("num_keyframes", pa.int32()),
        ("stage3_frames", pa.int32()),
        ("visual_tokens", pa.int64()),
        ("motion_score", pa.float32()),  # mean absolute frame difference in [0, 1]; null where not computed
        ("phash", pa.list_(pa.uint64())),  # keyframe pHashes (whole, inner, ...): the near-duplicate lookup's table
        ("near_duplicate_of", pa.string()),  # clip id of the nearest earlier clip of another video, or null
        ("near_duplicate_distance", pa.int32()),  # its Hamming distance (bits of 64)
    ]
)


def index_rows(record: dict, sample: WrittenSample) -> tuple[dict, list[dict]]:
    """The video row and clip rows of one written sample, from its record."""
    video = record["video"]
    plan = record["plan"]
    media_ext = next(ext for ext in sample.members if ext != "json")
    media = sample.members[media_ext]
    js = sample.members["json"]
    stage3 = plan["stages"].get("stage3", {})
    video_row = {
        "key": sample.key,
        "shard": sample.shard,
        "media_member": media.name,
        "media_offset": media.offset,
        "media_size": media.size,
        "json_offset": js.offset,
        "json_size": js.size,
        "url": video["source_uri"],
        "sha256": video["sha256"],
        "duration": video["duration"],
        "fps": video["fps"],
        "num_frames": video["num_frames"],
        "width": video["width"],
        "height": video["height"],
        "codec": video["codec"],
        "container": video["container"],
        "has_audio": video["has_audio"],
        "bucket": plan["bucket"],
        "num_shots": len(record.get("shots", [])),
        "num_clips": len(record.get("clips", [])),
        "stage3_frames": stage3.get("num_frames", 0),
        "visual_tokens": stage3.get("visual_tokens", 0),
        "status": video.get("status", "ok"),
        "near_duplicate_of": (record.get("near_duplicate") or {}).get("of"),
        "near_duplicate_distance": (record.get("near_duplicate") or {}).get("distance"),
    }
    clip_rows = []
    for clip in record.get("clips", []):
        cstage3 = clip["plan"]["stages"].get("stage3", {})
        clip_rows.append(
            {
                "clip_id": clip["clip_id"],
                "key": sample.key,
                "shard": sample.shard,
                "start": clip["start"],
                "end": clip["end"],
                "start_frame": clip["start_frame"],
                "end_frame": clip["end_frame"],
                "duration": clip["end"] - clip["start"],
                "bucket": clip["plan"]["bucket"],
                "num_keyframes": len(clip.get("keyframes", [])),
                "stage3_frames": cstage3.get("num_frames", 0),
                "visual_tokens": cstage3.get("visual_tokens", 0),
                "motion_score": clip.get("motion_score"),
                "phash": [int(h, 16) for h in clip.get("phash", [])],
                "near_duplicate_of": clip.get("near_duplicate_of"),
                "near_duplicate_distance": clip.get("near_duplicate_distance"),
            }
        )
    return video_row, clip_rows


def _parquet_bytes(rows: list[dict], schema: pa.Schema, metadata: dict | None = None) -> bytes:
    buf = io.BytesIO()
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table.replace_schema_metadata(metadata) if metadata else table, buf)
    return buf.getvalue()


def _read_parquet(storage: Storage, path: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(path)))


def part_paths(shard: str) -> tuple[str, str]:
    base = shard.rsplit("/", 1)[-1][: -len(".tar")]
    return f"{PARTS_DIR}/{base}.videos.parquet", f"{PARTS_DIR}/{base}.clips.parquet"


def write_index_part(storage: Storage, shard: CommittedShard, records: dict[str, dict]) -> None:
    """Write the index part of a just-committed shard; ``records`` maps key → video record."""
    video_rows, clip_rows = [], []
    for sample in shard.samples:
        vrow, crows = index_rows(records[sample.key], sample)
        video_rows.append(vrow)
        clip_rows.extend(crows)
    vpath, cpath = part_paths(shard.name)
    storage.write_bytes(cpath, _parquet_bytes(clip_rows, CLIP_SCHEMA))
    # the shard's size rides in the videos part so building the shard table needs no HEAD per shard
    meta = {SHARD_BYTES_META: str(shard.bytes).encode()}
    storage.write_bytes(vpath, _parquet_bytes(video_rows, VIDEO_SCHEMA, meta))  # last: marks the part whole


def scan_shard(storage: Storage, shard: str) -> tuple[list[WrittenSample], dict[str, dict]]:
    """Every sample of ``shard`` with its member locations and parsed record, checked as it is read:
    regular members with safe names only, each sample a record plus media, records that are JSON
    objects. Raises :class:`~longvid.shards.validate.DamagedShard` (a stable reason class) otherwise."""
    import tarfile

    from .reader import UnsafeMemberError, split_member_name
    from .validate import DamagedShard
    from .writer import MemberLocation

    samples: dict[str, WrittenSample] = {}
    records: dict[str, dict] = {}
    stream = storage.open_read(shard)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isreg():
                    kind = "symlink" if member.issym() else "hardlink" if member.islnk() else "non-file"
                    raise DamagedShard(shard, "unsafe_member", f"member {member.name!r} is a {kind}")
                try:
                    key, ext = split_member_name(member.name)
                except UnsafeMemberError as exc:
                    raise DamagedShard(shard, "unsafe_member", str(exc)) from None
                sample = samples.setdefault(key, WrittenSample(key=key, shard=shard, members={}))
                sample.members[ext] = MemberLocation(member.name, member.offset_data, member.size)
                if ext == "json":
                    try:
                        records[key] = json.loads(tar.extractfile(member).read())
                    except (ValueError, UnicodeDecodeError) as exc:
                        raise DamagedShard(shard, "bad_record", f"{member.name} is not JSON ({exc})") from None
                    if not isinstance(records[key], dict):
                        raise DamagedShard(shard, "bad_record", f"{member.name} is not a JSON object")
    except (tarfile.TarError, EOFError) as exc:
        raise DamagedShard(shard, "not_a_tar", f"unreadable tar ({exc})") from None
    finally:
        stream.close()
    for sample in samples.values():
        if "json" not in sample.members or len(sample.members) < 2:
            raise DamagedShard(shard, "incomplete_sample", f"sample {sample.key} has members {sorted(sample.members)}")
    return list(samples.values()), records


def check_shard_rows(shard: str, samples: list[WrittenSample], records: dict[str, dict],
                     shard_bytes: int) -> tuple[pa.Table, pa.Table]:
    """The index rows of a scanned shard, every one validated (types by the schemas, values by
    :mod:`validate`); the first bad record raises :class:`DamagedShard` naming its key and field."""
    from .validate import DamagedShard, clip_row_reasons, video_row_reasons

    video_rows, clip_rows = [], []
    for sample in samples:
        try:
            vrow, crows = index_rows(records[sample.key], sample)
            videos = pa.Table.from_pylist([vrow], schema=VIDEO_SCHEMA)
            clips = pa.Table.from_pylist(crows, schema=CLIP_SCHEMA)
        except (KeyError, TypeError, AttributeError, ValueError, StopIteration, pa.ArrowException) as exc:
            raise DamagedShard(shard, "bad_record", f"record of {sample.key}: {type(exc).__name__}: {exc}") from None
        sizes = pa.table({"shard": [shard], "bytes": pa.array([shard_bytes], pa.int64())})
        for kind, reasons in (("video", video_row_reasons(videos, sizes)), ("clip", clip_row_reasons(clips))):
            if reasons.null_count < len(reasons):
                bad = reasons.drop_null()[0].as_py()
                raise DamagedShard(shard, "bad_record", f"record of {sample.key}: {kind} row fails {bad}")
        video_rows.append(videos)
        clip_rows.append(clips)
    return (pa.concat_tables(video_rows) if video_rows else VIDEO_SCHEMA.empty_table(),
            pa.concat_tables(clip_rows) if clip_rows else CLIP_SCHEMA.empty_table())


def rebuild_index_part(storage: Storage, shard: str) -> None:
    """Recreate a shard's index part by reading the shard (JSON members, offsets from headers);
    a shard that fails :func:`scan_shard` or :func:`check_shard_rows` raises ``DamagedShard``."""
    samples, records = scan_shard(storage, shard)
    size = storage.size(shard)
    check_shard_rows(shard, samples, records, size)
    write_index_part(storage, CommittedShard(name=shard, bytes=size, samples=samples), records)


def committed_shards(storage: Storage) -> list[str]:
    return [p for p in storage.list(SHARD_DIR) if p.endswith(".tar")]


def repair_index_parts(storage: Storage) -> list[str]:
    """Rebuild missing index parts; returns the shards that needed it."""
    have = set(storage.list(PARTS_DIR))
    repaired = []
    for shard in committed_shards(storage):
        if part_paths(shard)[0] not in have:
            rebuild_index_part(storage, shard)
            repaired.append(shard)
    return repaired


def read_index_parts(storage: Storage) -> tuple[pa.Table, pa.Table]:
    """Every video and clip row of the dataset (small datasets and tests only: O(rows) memory).

    Kept for callers that have not moved to :func:`longvid.shards.catalog.open_index` yet; reads
    through the shard table (compacted files and pending parts), never the old consolidated files.
    """
    from .catalog import open_index

    return open_index(storage).read_all()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: a column added since the part was written (``motion_score``) is null."""
    columns = [table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def read_videos_index(storage: Storage) -> pa.Table:
    """All video rows, sorted by (shard, key): small datasets and tests only."""
    return read_index_parts(storage)[0]


def read_clips_index(storage: Storage) -> pa.Table:
    """All clip rows, sorted by (shard, key, start): small datasets and tests only."""
    return read_index_parts(storage)[1]
