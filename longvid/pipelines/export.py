"""``longvid export llava``: a dataset as VideoChat-Flash (LLaVA-style) training data that its
stock trainer (``llava-train_videochat``, stages 2 and 3) reads unchanged: one JSONL file per
unit (video, clip) and duration bucket, the media files they reference, and the data YAML.

Works shard by shard (one shard's index rows and annotations at a time); clip records get
files of their own (the peer reads spans only through a Ceph client). Reads the dataset, never
writes into it; every output file appears under its final name only when complete, the YAML last.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from ..shards.conversation import IMAGE_TOKEN, Annotations, clip_turns, parse_layer_refs, video_turns
from ..shards.dataset import list_layers, read_dataset_json
from ..shards.catalog import DatasetIndex, open_index
from ..shards.layers import read_layer
from ..shards.sampling import BUCKET_LABELS, STAGES_BY_NAME, num_sampled_frames, time_prompt
from ..shards.storage import LocalStorage, Storage, is_s3
from ..shards.validate import clip_row_reasons, reason_counts, split_rows, video_row_reasons, warn_rejected
from .text_budget import TextBudget

UNITS = ("video", "clip", "both")
STAGES = ("stage2", "stage3")  # the peer's stage-2 (4-8 frames) and stage-3 (64-512 frames) scripts
# VideoChat-Flash's VIDEO_READER_FUNCS keys that read a plain local video file
VIDEO_READ_TYPES = ("decord", "av")
DATA_YAML = "llava_data.yaml"
BUCKET_ORDER = {label: i for i, label in enumerate(BUCKET_LABELS)}  # unknown labels sort last
# the peer's LazySupervisedDataset: all, or first/first2/first3/first4/end with N or P% (random raises there)
SAMPLING_RE = re.compile(r"^(?:all|(first|first2|first3|first4|end):(\d+)(%?))$")

SKIP_NO_TURNS = "no annotation turns in the chosen layers"
SKIP_NO_FRAMES = "too short for the stage's 4-frame multiple"
SKIP_TEXT = "a single turn longer than --max-text-tokens (dropped)"


class ExportError(ValueError):
    """Bad input: unknown layer, remote output folder, bad option value, missing media."""


@dataclass
class LlavaExportConfig:
    layers: list[str] = field(default_factory=list)  # LAYER/VERSION refs; empty: every layer that has exactly one version
    unit: str = "both"  # video | clip | both: whole-video records, clip records (a file per clip), or both
    stage: str = "stage3"  # the peer's training stage the frame counts follow (stage2: 4-8 frames, stage3: 64-512)
    time_prompt: bool = False  # write our time prompt; off: the peer's --time_msg short adds its own (two would contradict)
    data_root: str | None = None  # existing folder holding videos/ and clips/ (checked); None: the export writes them under --out
    video_read_type: str = "decord"  # the trainer's reader; decord is the peer's default, av needs MP4 (stream duration)
    sampling_strategy: str = "all"  # per-file sampling the peer applies: all, first:N, end:N, first:P% (N, P >= 1)
    json_root: str | None = None  # prefix of json_path in the YAML; None: the absolute output folder
    max_text_tokens: int = 24576  # the peer's 32768 model_max_length less 512 frames x 16 visual tokens
    tokenizer: str = "Qwen/Qwen2-7B-Instruct"  # counts text tokens; the peer's LLMs are Qwen2/2.5 (same tokenizer)
    tokenizer_path: str | None = None  # a local tokenizer folder, tried first (no hub is reached)
    where: str | None = None  # filter over video index columns (e.g. "duration > 60"); clips follow their video
    semantic_layer: str | None = None  # embedding layer whose dedup-semantic columns `where` may read (e.g. embed/v1)

    def check(self) -> None:
        if self.unit not in UNITS:
            raise ExportError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.stage not in STAGES:
            raise ExportError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.video_read_type not in VIDEO_READ_TYPES:
            raise ExportError(f"video_read_type must be one of {', '.join(VIDEO_READ_TYPES)}, "
                              f"got {self.video_read_type!r}")
        match = SAMPLING_RE.match(self.sampling_strategy)
        if not match or (match.group(2) is not None and int(match.group(2)) < 1):
            raise ExportError("sampling_strategy must be all, or first:N, first2:N, first3:N, first4:N, end:N with "
                              f"N >= 1 or a whole percentage P% (as VideoChat-Flash parses it), got "
                              f"{self.sampling_strategy!r}")
        if self.max_text_tokens <= 0:
            raise ExportError(f"max_text_tokens must be > 0, got {self.max_text_tokens}")


def selected_count(strategy: str, n: int) -> int:
    """How many of a file's ``n`` records the peer keeps under ``strategy`` (its own slicing)."""
    match = SAMPLING_RE.match(strategy)
    if match.group(1) is None:
        return n
    number = math.ceil(int(match.group(2)) * n / 100) if match.group(3) else int(match.group(2))
    k = {"first": 0, "first2": 1, "first3": 2, "first4": 3}.get(match.group(1))
    items = range(n)
    return len(items[-number:]) if k is None else len(items[number * k:number * (k + 1)])


def bucket_slug(label: str) -> str:
    """A bucket label as a file-name part: ``0-30s`` stays, ``>1h`` becomes ``gt1h``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace(">", "gt").replace("<", "lt"))


def jsonl_name(unit: str, bucket: str) -> str:
    return f"llava_{unit}_{bucket_slug(bucket)}.jsonl"


def resolve_layers(storage: Storage, refs: list[str]) -> list[str]:
    """The refs to export, checked against the layers present (a clear error names what exists)."""
    present = text_layers(storage)
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


def text_layers(storage: Storage) -> dict[str, list[str]]:
    """The layers present whose rows are text or JSON turns: embedding layers (vectors) left out."""
    from ..shards.layers import layer_dir, read_layer_meta

    out: dict[str, list[str]] = {}
    for name, versions in list_layers(storage).items():
        kept = [v for v in versions if not storage.exists(f"{layer_dir(name, v)}/layer.json")
                or read_layer_meta(storage, name, v).get("kind") != "embedding"]  # one small read per version
        if kept:
            out[name] = kept
    return out


class ShardAnnotations:
    """The chosen layers as Arrow, grouped by shard once (a join with the index and a sort):
    :meth:`for_shard` turns one shard's rows into an :class:`Annotations`."""

    def __init__(self, storage: Storage, refs: list[str], key_to_shard: pa.Table):
        self.refs = refs
        self.tables: list[tuple[pa.Table, dict[str, tuple[int, int]]]] = []
        for layer, version in parse_layer_refs(refs):
            table = read_layer(storage, layer, version).select(["key", "clip_id", "start", "end", "value", "value_type"])
            table = table.join(key_to_shard, keys="key", join_type="inner").sort_by("shard")
            self.tables.append((table, _slices(table["shard"])))

    def for_shard(self, shard: str) -> Annotations:
        ann = Annotations(layers=parse_layer_refs(self.refs))
        for table, slices in self.tables:  # layers in the order given: a later caption replaces an earlier one
            if shard in slices:
                start, length = slices[shard]
                for row in table.slice(start, length).drop_columns(["shard"]).to_pylist():  # one shard's rows
                    ann.add(row)
        for spans in ann.clips_of.values():
            spans.sort()
        return ann


def _slices(sorted_column: pa.ChunkedArray) -> dict[str, tuple[int, int]]:
    """value → (offset, length) of its run in a sorted column (one entry per shard)."""
    counts = pc.value_counts(sorted_column)
    out, offset = {}, 0
    for value, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()):
        out[value] = (offset, n)
        offset += n
    return out


GROUP_SHARDS = 64  # shards whose index rows are read together: one scan of their compacted file, bounded rows


def shard_groups(index: DatasetIndex) -> Iterator[list[str]]:
    names = sorted(index.shard_names)
    for i in range(0, len(names), GROUP_SHARDS):
        yield names[i:i + GROUP_SHARDS]


def read_group_rows(index: DatasetIndex, shards: list[str], where: pc.Expression | None = None,
                    semantic_layer: str | None = None,
                    skipped: dict[str, dict[str, int]] | None = None) -> dict[str, tuple[list[dict], list[dict]]]:
    """shard → (its ok videos by key, its clips by key and start), for one group of shards;
    ``where`` filters the videos (clips of a video filtered out are dropped with it), after the
    ``semantic_layer``'s per-video columns are joined when one is given. Hostile rows
    (validate.py) are left out, named in a warning and counted into ``skipped[unit][reason]``."""
    videos = index.read_videos(shards, filter=pc.field("status") == "ok")
    if where is not None and semantic_layer:
        from ..shards.semantic_columns import read_semantic, with_video_columns

        names = videos.column_names
        joined = with_video_columns(videos, read_semantic(index.storage, semantic_layer, shards))
        videos = joined.filter(where).select(names).sort_by([("shard", "ascending"), ("media_offset", "ascending")])
    elif where is not None:
        videos = videos.filter(where)
    sizes = index.shards.filter(pc.is_in(index.shards["shard"], pa.array(shards, pa.string())))
    videos = _valid_rows(videos, video_row_reasons(videos, sizes.select(["shard", "bytes"])), "video", "key", skipped)
    clips = index.read_clips(shards)
    clips = _valid_rows(clips, clip_row_reasons(clips), "clip", "clip_id", skipped)
    clips = clips.filter(pc.is_in(clips["key"], videos["key"]))
    out: dict[str, tuple[list[dict], list[dict]]] = {s: ([], []) for s in shards}
    for v in videos.to_pylist():  # bounded: GROUP_SHARDS shards' rows
        out[v["shard"]][0].append(v)
    for c in clips.to_pylist():
        out[c["shard"]][1].append(c)
    return out


def _valid_rows(rows: pa.Table, reasons: pa.Array, unit: str, id_column: str,
                skipped: dict[str, dict[str, int]] | None) -> pa.Table:
    good, rejected = split_rows(rows, reasons)
    if rejected.num_rows:
        warn_rejected(unit, rejected, id_column)
        counts = skipped.setdefault(unit, {}) if skipped is not None else {}
        for reason, n in reason_counts(rejected).items():
            counts[f"bad index row ({reason})"] = counts.get(f"bad index row ({reason})", 0) + n
    return good


def key_shard_table(index: DatasetIndex) -> pa.Table:
    """key → shard for every video: two string columns, Arrow only."""
    return index.videos_dataset().to_table(columns=["key", "shard"])


@dataclass
class RecordBuilder:
    """Records of one unit from its turns: the peer's frame count for the stage, the optional time
    prompt, exactly one ``<image>``, and conversations split to fit the text budget."""

    config: LlavaExportConfig
    budget: TextBudget
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    text: dict[str, int] = field(default_factory=lambda: {"split_records": 0, "extra_records": 0, "dropped_turns": 0})

    def frames(self, vlen: int, fps: float) -> int:
        bounds = STAGES_BY_NAME[self.config.stage]
        return num_sampled_frames(vlen, fps, bounds.lo, bounds.hi) if vlen > 0 and fps > 0 else 0

    def _conversation(self, turns: list[tuple[str, str]], duration: float, frames: int) -> list[dict]:
        conv = []
        for i, (question, answer) in enumerate(turns):
            if i == 0:
                prompt = f"{time_prompt(duration, frames)}\n" if self.config.time_prompt else ""
                question = f"{IMAGE_TOKEN}\n{prompt}{question}"
            conv += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        return conv

    def _chunks(self, turns: list[tuple[str, str]], duration: float, frames: int) -> Iterator[list[dict]]:
        """Conversations of whole turns, each within the budget; a turn over it alone is dropped."""
        chunk: list[tuple[str, str]] = []
        for turn in turns:
            if self.budget.conversation_tokens(self._conversation([turn], duration, frames)) > self.budget.max_tokens:
                self.text["dropped_turns"] += 1
                continue
            if chunk and self.budget.conversation_tokens(
                    self._conversation(chunk + [turn], duration, frames)) > self.budget.max_tokens:
                yield self._conversation(chunk, duration, frames)
                chunk = []
            chunk.append(turn)
        if chunk:
            yield self._conversation(chunk, duration, frames)

    def records(self, unit: str, record_id: str, path: str, turns: list[tuple[str, str]], duration: float,
                vlen: int, fps: float) -> list[dict]:
        skipped = self.skipped.setdefault(unit, {})
        frames = self.frames(vlen, fps)
        reason = SKIP_NO_TURNS if not turns else SKIP_NO_FRAMES if frames <= 0 or frames % 4 else None
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            return []
        clean = [(q.replace(IMAGE_TOKEN, "image"), str(a).replace(IMAGE_TOKEN, "image")) for q, a in turns]
        convs = list(self._chunks(clean, duration, frames))
        if not convs:
            skipped[SKIP_TEXT] = skipped.get(SKIP_TEXT, 0) + 1
            return []
        if len(convs) > 1:
            self.text["split_records"] += 1
            self.text["extra_records"] += len(convs) - 1
        return [{"id": record_id if len(convs) == 1 else f"{record_id}_part{i}", "video": path,
                 "conversations": conv, "duration": round(duration, 6)} for i, conv in enumerate(convs)]


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


def video_path(video: dict) -> str:
    """The record's ``video`` for a whole video: ``videos/<key>.<ext>`` (ext of the shard member)."""
    from .export_media import video_file

    return video_file(video)


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
              f"# layers: {', '.join(layers)}; units: {config.unit}; frames follow {config.stage}; "
              f"time prompt: {'ours' if config.time_prompt else 'left to the trainer (--time_msg)'}\n")
    return header + yaml.safe_dump({"datasets": entries}, sort_keys=False)


def _check_out_and_root(out: str, config: LlavaExportConfig) -> tuple[str, str]:
    if is_s3(out) or "://" in out:
        raise ExportError(f"--out must be a local folder, got {out!r} (copy the folder to object storage afterwards)")
    out_dir = os.path.abspath(os.path.expanduser(out))
    if config.data_root is None:
        return out_dir, out_dir
    if "://" in config.data_root:
        raise ExportError(f"--data-root must be a local folder, got {config.data_root!r} (VideoChat-Flash reads "
                          "remote paths only through its Ceph client); omit it to write the media under --out")
    root = os.path.abspath(os.path.expanduser(config.data_root))
    if not os.path.isdir(root):
        raise ExportError(f"--data-root {root} does not exist; omit it to write the media under --out")
    return out_dir, root


def _export_shard(shard: str, videos: list[dict], clips: list[dict], config: LlavaExportConfig,
                  ann: ShardAnnotations, builder: RecordBuilder, files: JsonlFiles, media, data_root: str,
                  missing: list[str]) -> None:
    """Records of one shard into the JSONL files, and its media jobs (or existence checks)."""
    from .export_media import clip_file

    annotations = ann.for_shard(shard)
    clips_of: dict[str, list[dict]] = {}
    for c in clips:
        clips_of.setdefault(c["key"], []).append(c)
    for v in videos:
        whole = False
        if config.unit in ("video", "both"):
            path = video_path(v)
            for record in builder.records("video", v["key"], path, video_turns(annotations, v["key"]), v["duration"],
                                          v["num_frames"], v["fps"]):
                files.write("video", v["bucket"], record)
                whole = True
        used = []
        if config.unit in ("clip", "both"):
            for c in clips_of.get(v["key"], []):
                recs = builder.records("clip", c["clip_id"], clip_file(c["clip_id"]),
                                       clip_turns(annotations, v["key"], c["clip_id"]), c["duration"],
                                       c["end_frame"] - c["start_frame"], v["fps"])
                for record in recs:
                    files.write("clip", c["bucket"], record)
                if recs:
                    used.append(c)
        if not whole and not used:
            continue
        if config.video_read_type == "av" and whole and not video_path(v).endswith(".mp4"):
            raise ExportError(f"--video-read-type av needs MP4 files (the peer reads the stream duration), but "
                              f"{v['key']} is {video_path(v)}: use decord, or ingest with write.media=mp4")
        if media is not None:
            media.submit(v, used, whole)
        else:
            wanted = ([video_path(v)] if whole else []) + [clip_file(c["clip_id"]) for c in used]
            missing.extend(p for p in wanted if not os.path.exists(os.path.join(data_root, p)))


def run_export_llava(dataset: str, out: str, config: LlavaExportConfig, log=print) -> dict:
    """Export ``dataset`` into the local folder ``out``; returns the run's summary."""
    from .export_media import MediaJobs
    from .ingest import RayConfig, connect_ray

    config.check()
    out_dir, data_root = _check_out_and_root(out, config)
    storage = Storage.for_uri(dataset)
    if not is_s3(dataset):
        target, root = os.path.realpath(os.path.expanduser(out)), os.path.realpath(storage.root)
        if os.path.commonpath([target, root]) == root:
            raise ExportError(f"--out {out} is inside the dataset {dataset}: name a folder outside it "
                              "(an export never writes into the dataset)")
    read_dataset_json(storage)  # refuse what is not a dataset (or is newer than this code)
    layers = resolve_layers(storage, list(config.layers))
    index = open_index(storage)
    where = _compile_where(config.where, storage, config.semantic_layer)
    ann = ShardAnnotations(storage, layers, key_shard_table(index))
    budget = TextBudget(config.max_text_tokens, config.tokenizer, config.tokenizer_path)
    builder = RecordBuilder(config, budget)
    os.makedirs(out_dir, exist_ok=True)
    write_media = config.data_root is None
    started = connect_ray(RayConfig(progress_bars=False)) if write_media else False
    files, missing = JsonlFiles(out_dir), []
    try:
        media = MediaJobs(storage.root, out_dir) if write_media else None
        try:
            for group in shard_groups(index):  # a group's index rows, then shard by shard
                for shard, (videos, clips) in read_group_rows(index, group, where, config.semantic_layer,
                                                              builder.skipped).items():
                    _export_shard(shard, videos, clips, config, ann, builder, files, media, data_root, missing)
            media_summary = media.finish() if media is not None else None
        except BaseException:
            files.abort()
            raise
    finally:
        if started:
            import ray

            ray.shutdown()
    counts = dict(files.counts)
    _check_before_commit(files, counts, config, data_root, missing)
    written = files.commit()
    failed = (media_summary or {}).get("failed", {})
    yaml_path = os.path.join(out_dir, DATA_YAML)
    if not failed:  # a YAML is never written whose data_root lacks some of the media
        text = data_yaml(written, config, data_root, out_dir, storage.root, layers)
        LocalStorage(out_dir).write_bytes(DATA_YAML, text.encode("utf-8"))  # last, atomic: lists only complete files
    listed = {os.path.basename(path) for _, _, path in written}
    stale = sorted(n for n in os.listdir(out_dir) if re.match(r"^llava_(video|clip)_.+\.jsonl$", n) and n not in listed)
    records: dict[str, dict[str, int]] = {}
    for (unit, bucket), n in counts.items():
        records.setdefault(unit, {})[bucket] = n
    summary = {
        "dataset": storage.root, "out": out_dir, "layers": layers, "stage": config.stage,
        "records": records, "skipped": builder.skipped, "files": [path for _, _, path in written],
        "yaml": yaml_path if not failed else None, "data_root": data_root, "media": media_summary,
        "text": {**builder.text, "max_tokens": config.max_text_tokens, "counted_with": budget.method},
        "stale": [os.path.join(out_dir, n) for n in stale],
    }
    log(format_summary(summary))
    return summary


def _compile_where(text: str | None, storage: Storage | None = None, semantic_layer: str | None = None
                   ) -> pc.Expression | None:
    """The --where filter as an Arrow expression, checked against the video index columns (and the
    semantic layer's per-video columns when --semantic-layer is given)."""
    if not text:
        return None
    from ..shards.index import VIDEO_SCHEMA
    from ..shards.semantic_columns import VIDEO_COLUMNS, check_semantic
    from ..shards.where import WhereError, check_columns, compile_where

    names = list(VIDEO_SCHEMA.names)
    if semantic_layer:
        try:
            check_semantic(storage, semantic_layer)
        except (FileNotFoundError, ValueError) as exc:
            raise ExportError(str(exc)) from None
        names += VIDEO_COLUMNS
    try:
        where = compile_where(text)
        check_columns(where, names, "video index" + ("" if semantic_layer else " (semantic_* columns need --semantic-layer)"))
    except WhereError as exc:
        raise ExportError(str(exc)) from None
    return where.expression


def _check_before_commit(files: JsonlFiles, counts: dict, config: LlavaExportConfig, data_root: str,
                         missing: list[str]) -> None:
    """Refuse (publishing nothing) media missing under --data-root or a strategy that empties a file."""
    if missing:
        files.abort()
        raise ExportError(f"{len(missing)} referenced media file(s) are not under --data-root {data_root} "
                          f"(first: {missing[0]}); omit --data-root to write them under --out")
    for (unit, bucket), n in counts.items():
        if selected_count(config.sampling_strategy, n) == 0:
            files.abort()
            raise ExportError(f"--sampling-strategy {config.sampling_strategy} keeps no record of "
                              f"{jsonl_name(unit, bucket)} ({n} records): the peer stops on an empty file")


def format_summary(summary: dict) -> str:
    lines = [f"exported {summary['dataset']} -> {summary['out']} (layers: {', '.join(summary['layers'])}; "
             f"frames follow {summary['stage']})"]
    for unit, per_bucket in summary["records"].items():
        lines.append(f"  {unit} records: {sum(per_bucket.values())}")
        for bucket in sorted(per_bucket, key=lambda b: BUCKET_ORDER.get(b, len(BUCKET_ORDER))):
            lines.append(f"    {bucket:>10}  {per_bucket[bucket]}")
    for unit, reasons in summary["skipped"].items():
        for reason, n in sorted(reasons.items()):
            lines.append(f"  skipped {n} {unit} record(s): {reason}")
    text = summary["text"]
    lines.append(f"  text: at most {text['max_tokens']} tokens a record ({text['counted_with']}); "
                 f"{text['split_records']} conversation(s) split into {text['extra_records']} extra record(s), "
                 f"{text['dropped_turns']} over-long turn(s) dropped")
    lines.append(f"  files: {len(summary['files'])} JSONL + {summary['yaml'] or 'no YAML (media failed)'}")
    for path in summary["files"]:
        lines.append(f"    {path}")
    for path in summary["stale"]:
        lines.append(f"  note: {path} is from an earlier export and is not in the YAML (delete it if unwanted)")
    media = summary["media"]
    if media is None:
        lines.append(f"  media: every referenced file found under data_root {summary['data_root']}")
    else:
        videos, clips = media["videos"], media["clips"]
        lines.append(f"  media -> {summary['out']}: videos {videos.get('written', 0)} written, "
                     f"{videos.get('present', 0)} present; clips {clips.get('copy', 0)} stream-copied, "
                     f"{clips.get('reencode', 0)} re-encoded, {clips.get('present', 0)} present; "
                     f"{len(media['failed'])} video(s) failed")
        for key, reason in sorted(media["failed"].items()):
            lines.append(f"    failed {key}: {reason}")
    return "\n".join(lines)
