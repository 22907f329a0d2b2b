"""Haystacks: 1-fps frame plans over a dataset's videos (concatenating videos when one is too short)
and the decoding of a plan from the shards by seeking (``shards.seekio``), as the training stream does.

A plan points into the shards (video key, shard, byte range, frame numbers); no haystack byte is
copied. Reading the dataset's video rows happens in ``video_rows`` only, so a new index API changes
one function. Never reads a whole index into memory: parts are read one at a time until enough.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..shards.index import PARTS_DIR
from ..shards.seekio import MemberFile, decode_frames
from ..shards.storage import Storage

# what a plan keeps of each video: where its bytes are and how to number its frames
VIDEO_FIELDS = ("key", "shard", "media_offset", "media_size", "fps", "num_frames", "width", "height")


class HaystackError(ValueError):
    """A dataset that cannot give the requested haystack."""


def one_fps_frames(num_frames: int, fps: float) -> list[int]:
    """Frame numbers of a video sampled at 1 frame per second: the frame at each whole second."""
    if num_frames <= 0 or fps <= 0:
        return []
    seconds = int(math.floor((num_frames - 1) / fps)) + 1
    return [min(num_frames - 1, int(round(s * fps))) for s in range(seconds)]


def video_rows(storage: Storage, enough_frames: int, seed: int) -> list[dict]:
    """Decodable videos (status ok) from the index parts, parts taken in a seeded order, until their
    1-fps frames reach ``enough_frames`` or the parts run out. Bounded by what a haystack needs."""
    parts = sorted(p for p in storage.list(PARTS_DIR) if p.endswith(".videos.parquet"))
    if not parts:
        raise HaystackError(f"{storage.root}: no index parts under {PARTS_DIR}/ (not an ingested dataset?)")
    order = np.random.default_rng([seed, 0x6861]).permutation(len(parts))
    rows, total = [], 0
    for number in order:
        table = pq.read_table(io.BytesIO(storage.read_bytes(parts[number])))
        table = table.filter(pc.and_(pc.equal(table["status"], "ok"),
                                     pc.and_(pc.greater(table["fps"], 0), pc.greater(table["num_frames"], 0))))
        for row in table.select(list(VIDEO_FIELDS)).sort_by("key").to_pylist():  # one shard's rows: bounded
            rows.append(row)
            total += len(one_fps_frames(row["num_frames"], row["fps"]))
        if total >= enough_frames:
            break
    return rows


def available_frames(rows: list[dict]) -> int:
    return sum(len(one_fps_frames(r["num_frames"], r["fps"])) for r in rows)


def plan_haystack(rows: list[dict], length: int, seed: int) -> dict:
    """A haystack of ``length`` 1-fps frames: videos in a seeded order, each from its start, the last
    one cut short. Returns {"frames", "videos": {key: fields}, "segments": [{"key", "frames"}]}."""
    if length > available_frames(rows):
        raise HaystackError(f"{length} frames asked, the dataset gives {available_frames(rows)} at 1 fps")
    order = np.random.default_rng([seed, length]).permutation(len(rows))
    segments, videos, need = [], {}, length
    for number in order:
        row = rows[int(number)]
        frames = one_fps_frames(row["num_frames"], row["fps"])[:need]
        if not frames:
            continue
        segments.append({"key": row["key"], "frames": frames})
        videos[row["key"]] = {k: row[k] for k in VIDEO_FIELDS if k != "key"}
        need -= len(frames)
        if need == 0:
            break
    return {"frames": length, "segments": segments, "videos": videos}


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [T, H, W, 3] → uint8 [T, size, size, 3] (bilinear, antialiased)."""
    import torch
    import torch.nn.functional as F

    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


DECODE_CHUNK = 256  # frames per seek-decode call: bounds the full-size frames held before resizing


def decode_haystack(storage: Storage, plan: dict, size: int, stats=None) -> np.ndarray:
    """The plan's frames in order as uint8 [frames, size, size, 3], seek-decoded per segment in
    chunks (ranged reads of the video's tar member; a segment's frames are 1 s apart), each chunk
    scaled to the short side ``size`` while decoding, then squared."""
    out = np.empty((plan["frames"], size, size, 3), np.uint8)
    at = 0
    for segment in plan["segments"]:
        video = plan["videos"][segment["key"]]
        member = MemberFile(storage, video["shard"], video["media_offset"], video["media_size"])
        try:
            for begin in range(0, len(segment["frames"]), DECODE_CHUNK):
                chunk = segment["frames"][begin : begin + DECODE_CHUNK]
                member.seek(0)  # the demuxer of the previous chunk left it anywhere; its block cache stays
                frames = decode_frames(member, chunk, resize=size, stats=stats)
                out[at : at + len(chunk)] = resize_frames(frames, size)
                at += len(chunk)
        finally:
            member.close()
    if at != plan["frames"]:
        raise HaystackError(f"the plan has {at} frames in its segments, not {plan['frames']}")
    return out


def insert_needles(haystack: np.ndarray, needles: list[np.ndarray], insert_at: list[int], clip: int) -> np.ndarray:
    """The final sequence: ``haystack`` with needle ``i`` entered as ``clip`` copies of its image
    before haystack frame ``insert_at[i]`` (offsets into the haystack, ascending)."""
    if len(needles) != len(insert_at) or list(insert_at) != sorted(insert_at):
        raise ValueError("one ascending insertion offset per needle expected")
    pieces, previous = [], 0
    for image, at in zip(needles, insert_at):
        pieces += [haystack[previous:at], np.repeat(image[None], clip, axis=0)]
        previous = at
    pieces.append(haystack[previous:])
    return np.concatenate(pieces)
