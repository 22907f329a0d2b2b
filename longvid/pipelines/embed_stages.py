"""The stages of the embedding layer (the stage contract, run by ``pipelines.executors``):
``prepare_keyframes`` (CPU: one ranged read and one decode per video, each clip's stored DPSelect
keyframes resized, one item per clip with the frames as raw bytes) → ``embed`` (model actors: an
image encoder loaded once per actor, clips batched, one result item per clip).

Result items follow the annotate contract: ``{"part", "key", "result": JSON}`` with ``result =
{"expected", "rows", "failures", "num_tokens"}``; a row is ``{key, clip_id, start, end, embedding}``.
Items carry JSON and raw bytes, never pickles.
"""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np

from ..annotators.base import ItemFailed, ModelStage, Resources, Stage
from ..annotators.captioners.frames import iter_clip_frames
from ..annotators.embed import EncoderConfig, ImageEncoder
from ..shards.reader import read_record
from ..shards.sampling import segment_middles
from ..shards.storage import Storage

FRAME_SOURCE = "keyframes"  # the plan-stage name under which a clip's keyframes are handed to the frame decoder


def _result(part: str, key: str, expected: int, rows: list[dict], failures: list[dict]) -> dict:
    result = {"expected": expected, "rows": rows, "failures": failures, "num_tokens": 0}
    return {"part": part, "key": key, "result": json.dumps(result)}


def keyframe_clips(clips: list[dict], frames_per_clip: int) -> list[dict]:
    """Each clip with its keyframes (at most ``frames_per_clip``, spread evenly) as the plan the
    frame decoder reads; a clip without stored keyframes uses evenly spaced frames."""
    out = []
    for clip in clips:
        frames = list(clip.get("keyframes") or [])
        if len(frames) > frames_per_clip:
            frames = [frames[i] for i in segment_middles(len(frames), frames_per_clip)]
        if not frames:
            a, b = int(clip["start_frame"]), int(clip["end_frame"])
            frames = [a + i for i in segment_middles(max(1, b - a), frames_per_clip)]
        out.append(dict(clip, plan={"stages": {FRAME_SOURCE: {"frames": frames}}}))
    return out


def prepare_keyframes(video: dict, storage: Storage, config: EncoderConfig) -> Iterator[dict]:
    """yields one item per clip of ``video`` ({part, key, meta JSON, media: frames}), or result
    items with the failure (a video whose record or bytes cannot be read; clips a decode never reached)"""
    part, key = video["part"], video["key"]
    try:
        record = read_record(storage, video["shard"], video["json_offset"], video["json_size"])
        clips = keyframe_clips(list(record.get("clips", [])), config.frames_per_clip)
        fps = float(record["video"]["fps"])
    except Exception as exc:  # noqa: BLE001 - any unreadable record is this video's failure
        yield _result(part, key, 1, [], [{"stage": "read", "clip_id": None,
                                          "reason": f"cannot read the video record: {type(exc).__name__}: {exc}"}])
        return
    if not clips:
        yield _result(part, key, 1, [], [{"stage": "prepare_keyframes", "clip_id": None,
                                          "reason": "the video has no clips to embed"}])
        return
    expected, emitted = len(clips), set()
    try:
        media = storage.read_range(video["shard"], video["media_offset"], video["media_size"])
        for clip in iter_clip_frames(key, media, clips, fps, FRAME_SOURCE, config.frames_per_clip,
                                     config.longest_edge, config.hwaccel):
            meta = {"expected": expected, "clip_id": clip.clip_id, "start": clip.start, "end": clip.end,
                    "shape": list(clip.frames.shape)}
            emitted.add(clip.clip_id)
            yield {"part": part, "key": key, "meta": json.dumps(meta), "media": clip.frames.tobytes()}
    except (ItemFailed, ValueError, OSError) as exc:
        reason = exc.reason if isinstance(exc, ItemFailed) else f"{type(exc).__name__}: {exc}"
        for clip in clips:
            if clip["clip_id"] not in emitted:
                yield _result(part, key, expected, [], [{"stage": "decode", "clip_id": clip["clip_id"], "reason": reason}])


class PrepareKeyframes(Stage):
    """CPU: one video → one item per clip (its keyframes as media, JSON meta), or failure results."""

    name = "prepare_keyframes"
    version = "1"
    fans_out = True  # one video → one item per clip

    def __init__(self, storage: Storage, config: EncoderConfig, num_cpus: float = 1.0):
        self.storage, self.config = storage, config
        self.resources = Resources(num_cpus=num_cpus)

    def process(self, video: dict):
        return list(prepare_keyframes(video, self.storage, self.config))


class EmbedClips(ModelStage):
    """Model: clip items in, one result item per clip out (its L2-normalised embedding); failure
    results from the preparation stage pass through. ``batch_size``: clips per call (x frames_per_clip images)."""

    name = "embed"
    version = ImageEncoder.version

    def setup(self) -> None:
        self.encoder = ImageEncoder(self.config)
        self.encoder.setup()

    def process_batch(self, items: list[dict]) -> list[dict]:
        todo = [i for i, it in enumerate(items) if "result" not in it]
        metas = {i: json.loads(items[i]["meta"]) for i in todo}
        frames = [np.frombuffer(items[i]["media"], np.uint8).reshape(metas[i]["shape"]) for i in todo]
        try:
            vectors = self.encoder.embed_clips(frames)
            error = None
        except Exception as exc:  # noqa: BLE001 - the model broke on this batch: its clips fail, the run goes on
            vectors, error = None, f"engine error: {type(exc).__name__}: {exc}"
        out, position = [], {i: n for n, i in enumerate(todo)}
        for i, item in enumerate(items):
            if i not in position:
                out.append({"part": item["part"], "key": item["key"], "result": item["result"]})
                continue
            meta = metas[i]
            if error is not None:
                out.append(_result(item["part"], item["key"], meta["expected"], [],
                                   [{"stage": "embed", "clip_id": meta["clip_id"], "reason": error}]))
                continue
            row = {"key": item["key"], "clip_id": meta["clip_id"], "start": meta["start"], "end": meta["end"],
                   "embedding": np.round(vectors[position[i]], 6).tolist()}  # unit vectors: 6 decimals are exact in float16 and ~float32
            out.append(_result(item["part"], item["key"], meta["expected"], [row], []))
        return out
