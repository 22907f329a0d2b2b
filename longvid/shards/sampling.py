"""Duration-aware frame sampling (VideoChat-Flash's ``dynamic_fps1`` rule) and duration buckets.

Pure arithmetic shared by ingestion (stored plans) and the training stream (plans for a span):
it must never touch video bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

CLIP_FRAMES = 4  # frames per clip in the vision path; frame counts are multiples of this
TOKENS_PER_FRAME = 16  # visual tokens per frame after HiCo clip-level compression


@dataclass(frozen=True)
class StageBounds:
    """Frame-count bounds of one training stage (SEEDS.md §1)."""

    name: str
    lo: int
    hi: int


TRAINING_STAGES: tuple[StageBounds, ...] = (
    StageBounds("stage1", 4, 4),  # alignment: 4 frames, segment middles
    StageBounds("stage2", 1, 8),  # short-video pretraining
    StageBounds("stage3", 64, 512),  # joint short+long instruction tuning
    StageBounds("stage4", 64, 512),  # high-resolution post-tuning (448 px)
)
STAGES_BY_NAME = {s.name: s for s in TRAINING_STAGES}

# (upper bound in seconds, label). Buckets are half-open [previous, bound).
DURATION_BUCKETS: tuple[tuple[float, str], ...] = (
    (30.0, "0-30s"),
    (60.0, "30-60s"),
    (120.0, "1-2min"),
    (180.0, "2-3min"),
    (600.0, "3-10min"),
    (1800.0, "10-30min"),
    (3600.0, "30-60min"),
    (float("inf"), ">1h"),
)
BUCKET_LABELS = tuple(label for _, label in DURATION_BUCKETS)


def duration_bucket(duration: float) -> str:
    """Label of the duration bucket holding ``duration`` seconds."""
    if duration < 0:
        raise ValueError(f"duration must be >= 0, got {duration}")
    for bound, label in DURATION_BUCKETS:
        if duration < bound:
            return label
    return DURATION_BUCKETS[-1][1]


def num_sampled_frames(vlen: int, fps: float, lo: int, hi: int, clip_frames: int = CLIP_FRAMES) -> int:
    """How many frames ``dynamic_fps1`` takes from a span of ``vlen`` frames at ``fps``."""
    if vlen <= 0:
        raise ValueError(f"vlen must be > 0, got {vlen}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if lo > vlen:  # very short videos
        lo = (vlen // clip_frames) * clip_frames
    duration = vlen / fps
    n = clip_frames * max(1, int(duration // clip_frames))  # ~1 frame per second, multiple of L
    n = min(n, hi)
    n = max(lo, n)
    return n


def segment_middles(vlen: int, n: int) -> list[int]:
    """Middles of ``n`` equal segments of ``[0, vlen)``; if n > vlen, the last index repeats.

    Segment edges are ``linspace(0, vlen, k + 1)`` truncated to integers (k = min(n, vlen)),
    segment i spans ``[edge_i, edge_{i+1} - 1]`` and its middle is the floor of their mean.
    """
    if n <= 0 or vlen <= 0:
        return []
    k = min(n, vlen)
    edges = [int(i * vlen / k) for i in range(k + 1)]
    indices = [(edges[i] + edges[i + 1] - 1) // 2 for i in range(k)]
    return indices + [indices[-1]] * (n - k)


def frame_indices(vlen: int, fps: float, lo: int, hi: int, clip_frames: int = CLIP_FRAMES) -> list[int]:
    """Frame indices (relative to the span start) chosen by ``dynamic_fps1``.

    Returns an empty list when the span is too short to give a multiple of ``clip_frames``
    (for example 3 frames with lo=4): such a span cannot feed the 4-frame clip encoder.
    """
    n = num_sampled_frames(vlen, fps, lo, hi, clip_frames)
    if n <= 0:
        return []
    return segment_middles(vlen, n)


def time_prompt(duration: float, num_frames: int) -> str:
    """The time prompt every training sample carries."""
    return (
        f"The video lasts for {duration:.2f} seconds, and {num_frames} frames are uniformly "
        f"sampled from it."
    )


def frame_plan(
    num_frames: int,
    fps: float,
    start_frame: int = 0,
    stages: tuple[StageBounds, ...] = TRAINING_STAGES,
) -> dict:
    """Sampling plan of a span of ``num_frames`` frames starting at ``start_frame``.

    Indices are absolute (in the parent video's frame numbering) so a reader can seek to them.
    """
    duration = num_frames / fps
    per_stage = {}
    for stage in stages:
        rel = frame_indices(num_frames, fps, stage.lo, stage.hi)
        per_stage[stage.name] = {
            "frames": [start_frame + i for i in rel],
            "num_frames": len(rel),
            "visual_tokens": len(rel) * TOKENS_PER_FRAME,
        }
    return {
        "duration": round(duration, 6),
        "bucket": duration_bucket(duration),
        "stages": per_stage,
    }
