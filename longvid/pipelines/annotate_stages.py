"""The stages of ``longvid annotate`` (the stage contract, run by ``pipelines.executors``): the
CPU preparation stage (ranged read of one video from its shard, one decode, the planned frames
resized, one item per clip) and the model stages (captioner with or without a preparation stage
before it, and the summary/QA writer).

Items carry JSON metadata and raw frame bytes (as ``media``), never pickles. The annotators do the
work; this module only shapes items and turns failures into result items.
"""

from __future__ import annotations

import json
import time
from typing import Iterator

import numpy as np

from ..annotators.base import ItemFailed, ModelStage, Resources, Stage
from ..annotators.captioners import Captioner, CaptionerConfig, ClipFrames, caption_rows, producer_id
from ..annotators.captioners.frames import iter_clip_frames
from ..annotators.writers import TimelineClip, VideoTimeline, VideoWriter, WriterConfig, written_rows
from ..shards.reader import read_record
from ..shards.storage import Storage
from ..shards.validate import BAD_ROW

def batch_rows(batch: dict) -> list[dict]:
    """A Ray Data numpy batch (column → array) as plain Python rows."""
    columns = {name: (col.tolist() if isinstance(col, np.ndarray) else list(col)) for name, col in batch.items()}
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def columns(rows: list[dict], names: tuple[str, ...]) -> dict:
    return {name: [r[name] for r in rows] for name in names}


def _failure(video: dict, expected: int, stage: str, reason: str, clip_id: str | None = None) -> dict:
    meta = {"expected": expected, "clip_id": clip_id, "error": reason, "stage": stage}
    return {"part": video["part"], "key": video["key"], "meta": json.dumps(meta), "frames": b""}


def prepare_video(video: dict, storage: Storage, config: CaptionerConfig) -> Iterator[dict]:
    """One row per clip of ``video`` (frames as bytes + JSON meta), or failure rows that say why.

    Every clip yields exactly one row (``expected`` = clip count), so the driver knows when the
    video is done even if decoding breaks halfway.
    """
    if video.get(BAD_ROW):  # its offsets or sizes cannot be trusted: nothing is read or allocated from them
        yield _failure(video, 1, "index", f"bad_index_row: {video[BAD_ROW]} (video {video['key']} in {video['shard']})")
        return
    try:
        record = read_record(storage, video["shard"], video["json_offset"], video["json_size"])
        clips = list(record.get("clips", []))
        if video.get("only_clips"):  # a retry of some clips of this video (annotate --retry-failed)
            wanted = set(video["only_clips"])
            clips = [c for c in clips if c["clip_id"] in wanted]
        fps = float(record["video"]["fps"])
    except Exception as exc:  # noqa: BLE001 - any unreadable record is this video's failure
        yield _failure(video, 1, "read", f"cannot read the video record: {type(exc).__name__}: {exc}")
        return
    if not clips:
        yield _failure(video, 1, "prepare", "the video has no clips to caption")
        return
    expected, emitted = len(clips), set()
    try:
        media = storage.read_range(video["shard"], video["media_offset"], video["media_size"])
        c = config
        for clip in iter_clip_frames(video["key"], media, clips, fps, c.frame_source, c.max_frames, c.longest_edge,
                                     c.hwaccel):
            meta = {"expected": expected, "clip_id": clip.clip_id, "start": clip.start, "end": clip.end,
                    "shape": list(clip.frames.shape), "frame_times": clip.frame_times, "error": None}
            emitted.add(clip.clip_id)
            yield {"part": video["part"], "key": video["key"], "meta": json.dumps(meta), "frames": clip.frames.tobytes()}
    except (ItemFailed, ValueError, OSError) as exc:
        reason = exc.reason if isinstance(exc, ItemFailed) else f"{type(exc).__name__}: {exc}"
        for clip in clips:
            if clip["clip_id"] not in emitted:
                yield _failure(video, expected, "decode", reason, clip["clip_id"])


PREPARED = ("part", "key", "meta", "frames")
RESULTS = ("part", "key", "result")


def caption_prepared(captioner: Captioner, pid: str, rows: list[dict]) -> dict:
    """Caption the clip rows among ``rows``; failure rows pass through. One result per row."""
    metas = [json.loads(r["meta"]) for r in rows]
    todo = [i for i, m in enumerate(metas) if m["error"] is None]
    clips = [ClipFrames(rows[i]["key"], metas[i]["clip_id"], metas[i]["start"], metas[i]["end"],
                        np.frombuffer(rows[i]["frames"], dtype=np.uint8).reshape(metas[i]["shape"]),
                        metas[i]["frame_times"]) for i in todo]
    started = time.time()
    try:
        captions = dict(zip(todo, captioner.caption(clips))) if clips else {}
    except Exception as exc:  # noqa: BLE001 - the engine broke on this batch: its clips fail, the run goes on
        captions = {}
        for i in todo:
            metas[i].update(error=f"engine error: {type(exc).__name__}: {exc}", stage="caption")
    model_span = [started, time.time()] if clips else None  # when the model was busy (benchmarks: busy fraction)
    results = []
    for i, (row, meta) in enumerate(zip(rows, metas)):
        cap = captions.get(i)
        result = {"expected": meta["expected"], "rows": [], "failures": [], "num_tokens": 0, "model_span": model_span}
        if cap is None:
            result["failures"].append({"stage": meta["stage"], "clip_id": meta["clip_id"], "reason": meta["error"]})
        elif cap.ok:
            result.update(rows=caption_rows([cap], pid), num_tokens=cap.num_tokens)
        else:
            result.update(num_tokens=cap.num_tokens)
            result["failures"].append({"stage": "caption", "clip_id": cap.clip_id, "reason": cap.error})
        results.append({"part": row["part"], "key": row["key"], "result": json.dumps(result)})
    return columns(results, RESULTS)


class WriterActor:
    """A text model worker: video timelines in, summary + checked QA rows out."""

    def __init__(self, config: WriterConfig):
        self.writer = VideoWriter(config)
        self.writer.setup()
        self.pid = self.writer.producer_id()

    def __call__(self, batch: dict) -> dict:
        videos = batch_rows(batch)
        good = [v for v in videos if not v.get(BAD_ROW)]  # a hostile index row fails alone (validate.py)
        timelines = [VideoTimeline(v["key"], float(v["duration"]), [TimelineClip(*c) for c in json.loads(v["timeline"])])
                     for v in good]
        try:
            written = dict(zip((v["key"] for v in good), self.writer.write(timelines) if timelines else []))
        except Exception as exc:  # noqa: BLE001 - the engine broke on this batch: its videos fail
            reason = f"engine error: {type(exc).__name__}: {exc}"
            written = None
        results = []
        for video in videos:
            result = {"expected": 1, "rows": [], "failures": [], "num_tokens": 0}
            if video.get(BAD_ROW):
                result["failures"].append({"stage": "index", "clip_id": None,
                                           "reason": f"bad_index_row: {video[BAD_ROW]}"})
            elif written is None:
                result["failures"].append({"stage": "write", "clip_id": None, "reason": reason})
            else:
                w = written[video["key"]]
                result.update(rows=written_rows(w, float(video["duration"]), self.pid), num_tokens=w.num_tokens)
                result["failures"] = [{"stage": r["task"], "clip_id": None, "reason": r["reason"]} for r in w.rejected]
            results.append({"part": video["part"], "key": video["key"], "result": json.dumps(result)})
        return columns(results, RESULTS)


# -- the same work as stages of the contract (run by pipelines.executors) -------------------------
#
# Items: a video row of the index plus ``part`` → (prepare) one item per clip, its frames as
# ``media`` → (caption) one result item {part, key, result} per clip. The writer: video rows with
# their ``timeline`` → one result item per video.


def _result_items(columns_: dict) -> list[dict]:
    return [{"part": p, "key": k, "result": r} for p, k, r in zip(columns_["part"], columns_["key"], columns_["result"])]


class PrepareClipFrames(Stage):
    """CPU: one video → one item per clip (frames as media, JSON meta), or failure items."""

    name = "prepare"
    version = "1"
    fans_out = True  # one video → one item per clip

    def __init__(self, storage: Storage, config: CaptionerConfig, num_cpus: float):
        self.storage, self.config = storage, config
        self.resources = Resources(num_cpus=num_cpus)

    def process(self, video: dict):
        for row in prepare_video(video, self.storage, self.config):
            yield {"part": row["part"], "key": row["key"], "meta": row["meta"], "media": row["frames"]}


class CaptionClips(ModelStage):
    """Model: clip items in, one result item per clip out; the engine loads once per actor."""

    name = "caption"
    version = Captioner.version

    def setup(self) -> None:
        self.captioner = Captioner(self.config)
        self.captioner.setup()
        self.pid = producer_id(self.captioner.producer())

    def process_batch(self, items: list[dict]) -> list[dict]:
        rows = [{"part": it["part"], "key": it["key"], "meta": it["meta"], "frames": it["media"]} for it in items]
        return _result_items(caption_prepared(self.captioner, self.pid, rows))


class CaptionVideosInline(CaptionClips):
    """Model worker that decodes its videos itself (preparation stage off): the benchmark's
    baseline; each video fans out into its clips' results, captioned batch_size at a time."""

    def __init__(self, storage: Storage, config: CaptionerConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.storage = storage
        self.clip_batch, self.batch_size = self.batch_size, 1

    fans_out = True  # one video → one result item per clip
    process_batch = Stage.process_batch  # one video at a time through process(), not the clip batch of the parent

    def process(self, video: dict) -> list[dict]:
        rows, out = list(prepare_video(video, self.storage, self.config)), []
        for i in range(0, len(rows), self.clip_batch):
            out += _result_items(caption_prepared(self.captioner, self.pid, rows[i : i + self.clip_batch]))
        return out


class WriteSummaries(ModelStage):
    """Text model: video timelines in, one result item (summary + checked QA rows) per video."""

    name = "write"
    version = VideoWriter.version

    def setup(self) -> None:
        self.worker = WriterActor(self.config)

    def process_batch(self, items: list[dict]) -> list[dict]:
        return _result_items(self.worker(columns(items, tuple(items[0]))))
