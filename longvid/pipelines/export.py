"""``longvid export llava``: a dataset as VideoChat-Flash (LLaVA-style) training data, i.e. one
JSONL file per unit (video, clip) and duration bucket plus the data YAML its trainer reads.

Reads the index and the chosen annotation layers; never writes into the dataset. The output
folder is local; every file appears under its final name only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Iterator

import yaml

from ..shards.conversation import Annotations, build_conversation, clip_turns, parse_layer_refs, video_turns
from ..shards.dataset import list_layers, read_dataset_json
from ..shards.index import read_index_parts
from ..shards.reader import split_member_name
from ..shards.sampling import BUCKET_LABELS
from ..shards.storage import LocalStorage, Storage, is_s3

UNITS = ("video", "clip", "both")
# VideoChat-Flash's VIDEO_READER_FUNCS keys that read a plain video file
VIDEO_READ_TYPES = ("decord", "av")
MEDIA_DIR = "videos"
DATA_YAML = "llava_data.yaml"
COPY_CHUNK = 64 * 1024 * 1024  # bytes per ranged read when extracting media: bounded memory for long videos

BUCKET_ORDER = {label: i for i, label in enumerate(BUCKET_LABELS)}  # unknown labels sort last

SKIP_NO_TURNS = "no annotation turns in the chosen layers"
SKIP_NO_FRAMES = "no stage3 frames (too short to sample)"


class ExportError(ValueError):
    """Bad input: unknown layer, remote output folder, bad option value."""


@dataclass
class LlavaExportConfig:
    layers: list[str] = field(default_factory=list)  # LAYER/VERSION refs; empty: every layer that has exactly one version
    unit: str = "both"  # video | clip | both: whole-video samples, clip samples (parent video + start/end), or both
    data_root: str | None = None  # folder (or prefix) the trainer joins to each record's ``video``; None: <out>/videos
    extract_media: bool = False  # copy each exported video out of its shard into <out>/videos/ (off: no bytes copied)
    video_read_type: str = "decord"  # the trainer's reader for these files; decord is VideoChat-Flash's default
    sampling_strategy: str = "all"  # per-file sampling the trainer applies ("all", "first:N", "end:N", "first:P%")
    json_root: str | None = None  # prefix of json_path in the YAML; None: the absolute output folder

    def check(self) -> None:
        if self.unit not in UNITS:
            raise ExportError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.video_read_type not in VIDEO_READ_TYPES:
            raise ExportError(f"video_read_type must be one of {', '.join(VIDEO_READ_TYPES)}, "
                              f"got {self.video_read_type!r}")
        if not re.match(r"^(all|(first|end):\d+%?)$", self.sampling_strategy):
            raise ExportError("sampling_strategy must be all, first:N or end:N (N may be a percentage, P%), "
                              f"got {self.sampling_strategy!r}")


def bucket_slug(label: str) -> str:
    """A bucket label as a file-name part: ``0-30s`` stays, ``>1h`` becomes ``gt1h``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace(">", "gt").replace("<", "lt"))


def jsonl_name(unit: str, bucket: str) -> str:
    return f"llava_{unit}_{bucket_slug(bucket)}.jsonl"


def resolve_layers(storage: Storage, refs: list[str]) -> list[str]:
    """The refs to export, checked against the layers present (a clear error names what exists)."""
    present = list_layers(storage)
    listing = ", ".join(f"{name}/{v}" for name, versions in present.items() for v in versions) or "none"
    if not refs:
        ambiguous = {name: versions for name, versions in present.items() if len(versions) > 1}
        if ambiguous:
            name, versions = next(iter(ambiguous.items()))
            raise ExportError(f"layer {name} has versions {', '.join(versions)}: choose with --layer {name}/VERSION")
        refs = [f"{name}/{versions[0]}" for name, versions in present.items()]
        if not refs:
            raise ExportError(f"{storage.root} has no annotation layers: nothing to build conversations from")
    try:
        parsed = list(dict.fromkeys(parse_layer_refs(refs)))  # a ref given twice would double every turn
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    for layer, version in parsed:
        if version not in present.get(layer, []):
            raise ExportError(f"no annotation layer {layer}/{version} in {storage.root} (present: {listing})")
    return [f"{layer}/{version}" for layer, version in parsed]


def media_path(video: dict) -> str:
    """The record's ``video`` field: ``<key>.<ext>`` relative to data_root (ext of the shard member)."""
    key, ext = split_member_name(video["media_member"])
    return f"{key}.{ext}"


def _record(record_id: str, video: str, turns: list, span: dict, skipped: dict[str, int], **extra) -> dict | None:
    """One JSONL record, or None (counted in ``skipped``) without turns or sampled frames."""
    reason = SKIP_NO_TURNS if not turns else SKIP_NO_FRAMES if not span["stage3_frames"] else None
    if reason:
        skipped[reason] = skipped.get(reason, 0) + 1
        return None
    return {"id": record_id, "video": video,
            "conversations": build_conversation(turns, span["duration"], span["stage3_frames"]),
            "duration": span["duration"], **extra}


# yields (unit, bucket, video key, record) for whole videos; skips counted into ``skipped``
def video_records(videos: list[dict], ann: Annotations,
                  skipped: dict[str, int]) -> Iterator[tuple[str, str, str, dict]]:
    for v in videos:
        record = _record(v["key"], media_path(v), video_turns(ann, v["key"]), v, skipped)
        if record is not None:
            yield "video", v["bucket"], v["key"], record


# yields (unit, bucket, video key, record) for clips: the parent video's file plus start/end in seconds
def clip_records(clips: list[dict], videos_by_key: dict[str, dict], ann: Annotations,
                 skipped: dict[str, int]) -> Iterator[tuple[str, str, str, dict]]:
    for c in clips:
        parent = videos_by_key.get(c["key"])
        if parent is None:
            reason = "parent video not exportable (missing or not ok)"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        record = _record(c["clip_id"], media_path(parent), clip_turns(ann, c["key"], c["clip_id"]), c, skipped,
                         start=c["start"], end=c["end"])
        if record is not None:
            yield "clip", c["bucket"], c["key"], record


class JsonlFiles:
    """One temporary file per (unit, bucket), renamed to its final name on :meth:`commit`."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.handles: dict[tuple[str, str], tuple[str, object]] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def write(self, unit: str, bucket: str, record: dict) -> None:
        slot = (unit, bucket)
        if slot not in self.handles:
            final = os.path.join(self.out_dir, jsonl_name(unit, bucket))
            tmp = os.path.join(self.out_dir, f".{jsonl_name(unit, bucket)}.{uuid.uuid4().hex[:8]}.tmp")
            self.handles[slot] = (final, open(tmp, "w", encoding="utf-8"))
            self.counts[slot] = 0
        self.handles[slot][1].write(json.dumps(record, ensure_ascii=False) + "\n")
        self.counts[slot] += 1

    def commit(self) -> list[tuple[str, str, str]]:
        """Close and publish every file; returns (unit, bucket, path) in bucket order."""
        done = []
        for (unit, bucket), (final, handle) in self.handles.items():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(handle.name, final)
            done.append((unit, bucket, final))
        self.handles = {}
        return sorted(done, key=lambda d: (UNITS.index(d[0]), BUCKET_ORDER.get(d[1], len(BUCKET_ORDER))))

    def abort(self) -> None:
        for _, handle in self.handles.values():
            handle.close()
            os.unlink(handle.name)
        self.handles = {}


def extract_video(storage: Storage, video: dict, target: str) -> str:
    """Copy a video's bytes out of its shard to ``target`` (checked against the index sha256).

    Returns ``"present"`` when a complete copy is already there, else ``"extracted"``; raises on a
    checksum mismatch. The file appears under its final name only when complete.
    """
    if os.path.exists(target) and os.path.getsize(target) == video["media_size"]:
        return "present"  # written by rename, so a file of the right size is a finished one
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            done = 0
            while done < video["media_size"]:
                chunk = storage.read_range(video["shard"], video["media_offset"] + done,
                                           min(COPY_CHUNK, video["media_size"] - done))
                if not chunk:
                    raise OSError(f"{video['shard']} ends before the video's {video['media_size']} bytes")
                digest.update(chunk)
                f.write(chunk)
                done += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != video["sha256"]:
            raise OSError(f"sha256 of the bytes in {video['shard']} does not match the index")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return "extracted"


def data_yaml(files: list[tuple[str, str, str]], config: LlavaExportConfig, data_root: str, out_dir: str,
              source: str, layers: list[str]) -> str:
    """The VideoChat-Flash data YAML: a ``datasets`` list, one entry per JSONL file."""
    json_root = config.json_root if config.json_root is not None else out_dir
    entries = [
        {
            "json_path": os.path.join(json_root, os.path.basename(path)) if json_root else os.path.basename(path),
            "sampling_strategy": config.sampling_strategy,
            "data_root": data_root,
            "video_read_type": config.video_read_type,
        }
        for _, _, path in files
    ]
    header = (f"# written by `longvid export llava` from {source}\n"
              f"# layers: {', '.join(layers)}; units: {config.unit}\n")
    return header + yaml.safe_dump({"datasets": entries}, sort_keys=False)


def run_export_llava(dataset: str, out: str, config: LlavaExportConfig, log=print) -> dict:
    """Export ``dataset`` into the local folder ``out``; returns the run's summary."""
    config.check()
    if is_s3(out) or "://" in out:
        raise ExportError(f"--out must be a local folder, got {out!r} (copy the folder to object storage afterwards)")
    storage = Storage.for_uri(dataset)
    if not is_s3(dataset):
        target, root = os.path.realpath(os.path.expanduser(out)), os.path.realpath(storage.root)
        if os.path.commonpath([target, root]) == root:
            raise ExportError(f"--out {out} is inside the dataset {dataset}: name a folder outside it "
                              "(an export never writes into the dataset)")
    read_dataset_json(storage)  # refuse what is not a dataset (or is newer than this code)
    layers = resolve_layers(storage, list(config.layers))
    ann = Annotations.load(storage, layers)
    videos_table, clips_table = read_index_parts(storage)
    videos = sorted((v for v in videos_table.to_pylist() if v["status"] == "ok"), key=lambda v: v["key"])
    videos_by_key = {v["key"]: v for v in videos}
    out_dir = os.path.abspath(os.path.expanduser(out))
    os.makedirs(out_dir, exist_ok=True)
    data_root = config.data_root if config.data_root is not None else os.path.join(out_dir, MEDIA_DIR)

    skipped: dict[str, dict[str, int]] = {}
    used_keys: set[str] = set()
    files = JsonlFiles(out_dir)
    try:
        streams = []
        if config.unit in ("video", "both"):
            streams.append(video_records(videos, ann, skipped.setdefault("video", {})))
        if config.unit in ("clip", "both"):
            clips = sorted(clips_table.to_pylist(), key=lambda c: (c["key"], c["start"]))
            streams.append(clip_records(clips, videos_by_key, ann, skipped.setdefault("clip", {})))
        for stream in streams:
            for unit, bucket, key, record in stream:
                files.write(unit, bucket, record)
                used_keys.add(key)
        counts = dict(files.counts)
        written = files.commit()
    except BaseException:
        files.abort()
        raise

    media = {"extracted": 0, "present": 0, "failed": {}}
    if config.extract_media:
        media_dir = os.path.join(out_dir, MEDIA_DIR)
        os.makedirs(media_dir, exist_ok=True)
        for key in sorted(used_keys):
            video = videos_by_key[key]
            try:
                media[extract_video(storage, video, os.path.join(media_dir, media_path(video)))] += 1
            except OSError as exc:  # one bad video is reported, the others still come out
                media["failed"][key] = str(exc)

    yaml_path = os.path.join(out_dir, DATA_YAML)
    text = data_yaml(written, config, data_root, out_dir, storage.root, layers)
    LocalStorage(out_dir).write_bytes(DATA_YAML, text.encode("utf-8"))  # last, atomic: lists only complete files

    listed = {os.path.basename(path) for _, _, path in written}
    stale = sorted(n for n in os.listdir(out_dir) if re.match(r"^llava_(video|clip)_.+\.jsonl$", n) and n not in listed)
    records: dict[str, dict[str, int]] = {}
    for (unit, bucket), n in counts.items():
        records.setdefault(unit, {})[bucket] = n
    summary = {
        "dataset": storage.root,
        "out": out_dir,
        "layers": layers,
        "records": records,
        "skipped": skipped,
        "files": [path for _, _, path in written],
        "yaml": yaml_path,
        "data_root": data_root,
        "media": media,
        "videos_referenced": len(used_keys),
        "stale": [os.path.join(out_dir, n) for n in stale],
    }
    log(format_summary(summary, config))
    return summary


def format_summary(summary: dict, config: LlavaExportConfig) -> str:
    lines = [f"exported {summary['dataset']} -> {summary['out']} (layers: {', '.join(summary['layers'])})"]
    for unit, per_bucket in summary["records"].items():
        total = sum(per_bucket.values())
        lines.append(f"  {unit} records: {total}")
        for bucket in sorted(per_bucket, key=lambda b: BUCKET_ORDER.get(b, len(BUCKET_ORDER))):
            lines.append(f"    {bucket:>10}  {per_bucket[bucket]}")
    for unit, reasons in summary["skipped"].items():
        for reason, n in sorted(reasons.items()):
            lines.append(f"  skipped {n} {unit} record(s): {reason}")
    lines.append(f"  files: {len(summary['files'])} JSONL + {summary['yaml']}")
    for path in summary["files"]:
        lines.append(f"    {path}")
    for path in summary["stale"]:
        lines.append(f"  note: {path} is from an earlier export and is not in the YAML (delete it if unwanted)")
    media = summary["media"]
    if config.extract_media:
        lines.append(f"  media: {media['extracted']} extracted, {media['present']} already present, "
                     f"{len(media['failed'])} failed -> {os.path.join(summary['out'], MEDIA_DIR)}")
        for key, reason in sorted(media["failed"].items()):
            lines.append(f"    failed {key}: {reason}")
    else:
        lines.append(f"  media not extracted: the trainer needs {summary['videos_referenced']} video file(s) "
                     f"<key>.<ext> under data_root {summary['data_root']} (rerun with --extract-media, "
                     f"or --data-root where they are)")
    return "\n".join(lines)
