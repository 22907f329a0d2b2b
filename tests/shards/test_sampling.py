import numpy as np
import pytest

from longvid.shards.sampling import (
    STAGES_BY_NAME,
    TOKENS_PER_FRAME,
    duration_bucket,
    frame_indices,
    frame_plan,
    time_prompt,
)


def reference_indices(vlen, fps, lo, hi, clip=4):
    """Independent rendering of VideoChat-Flash's dynamic_fps1 + 'middle' sampling with numpy."""
    if lo > vlen:
        lo = (vlen // clip) * clip
    duration = vlen / fps
    n = max(lo, min(hi, clip * max(1, int(duration // clip))))
    if n == 0:
        return []
    acc = min(n, vlen)
    edges = np.linspace(0, vlen, acc + 1).astype(int)
    idx = [(edges[i] + edges[i + 1] - 1) // 2 for i in range(acc)]
    return idx + [idx[-1]] * (n - acc)


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_matches_reference_over_many_lengths(stage):
    s = STAGES_BY_NAME[stage]
    rng = np.random.default_rng(0)
    for vlen in list(range(1, 80)) + list(rng.integers(80, 200_000, size=300)):
        for fps in (1.0, 10.0, 23.976, 25.0, 30.0, 60.0):
            got = frame_indices(int(vlen), fps, s.lo, s.hi)
            assert got == reference_indices(int(vlen), fps, s.lo, s.hi), (vlen, fps)


def test_stage3_examples_from_the_paper():
    s = STAGES_BY_NAME["stage3"]
    assert len(frame_indices(30 * 25, 25, s.lo, s.hi)) == 64  # 30 s → 64 frames (lower bound)
    assert len(frame_indices(180 * 30, 30, s.lo, s.hi)) == 180  # 3 min → 1 fps
    assert len(frame_indices(3600 * 30, 30, s.lo, s.hi)) == 512  # ≥ 512 s → 512 spread
    idx = frame_indices(3600 * 30, 30, s.lo, s.hi)
    gaps = np.diff(idx)
    assert gaps.min() >= 210 and gaps.max() <= 211  # uniformly spread


def test_counts_are_multiples_of_four_when_possible():
    for name in ("stage1", "stage2", "stage3"):
        s = STAGES_BY_NAME[name]
        for vlen in range(4, 5000, 37):
            assert len(frame_indices(vlen, 25.0, s.lo, s.hi)) % 4 == 0


def test_stage2_short_video_rule():
    s = STAGES_BY_NAME["stage2"]
    assert len(frame_indices(7 * 25, 25, s.lo, s.hi)) == 4  # under 8 s
    assert len(frame_indices(20 * 25, 25, s.lo, s.hi)) == 8


def test_buckets_edges():
    assert duration_bucket(0) == "0-30s"
    assert duration_bucket(29.99) == "0-30s"
    assert duration_bucket(30) == "30-60s"
    assert duration_bucket(150) == "2-3min"
    assert duration_bucket(3599) == "30-60min"
    assert duration_bucket(3600) == ">1h"
    with pytest.raises(ValueError):
        duration_bucket(-1)


def test_plan_of_a_span_is_absolute_and_counts_tokens():
    plan = frame_plan(num_frames=500, fps=25.0, start_frame=1000)
    st3 = plan["stages"]["stage3"]
    assert all(1000 <= f < 1500 for f in st3["frames"])
    assert st3["visual_tokens"] == TOKENS_PER_FRAME * st3["num_frames"]
    assert plan["bucket"] == "0-30s"


def test_time_prompt():
    assert time_prompt(23.7712, 64) == "The video lasts for 23.77 seconds, and 64 frames are uniformly sampled from it."
