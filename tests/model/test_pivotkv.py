"""PivotKV chunked prefill: DPSelect peaks, the cache keeps exactly ceil(r x chunk) entries per
video chunk and all text, kept entries are the uncompressed ones, pivots are never dropped."""

import math

import torch

from longvid.model.llm import KVCache
from longvid.model.pivotkv import PivotKVConfig, forward_chunk, peak_frames, pivot_tokens
from longvid.model.toydata import SyntheticCaptions


def test_peak_frames_are_local_maxima_of_the_distance():
    d = torch.tensor([0.2, 0.1, 0.5, 0.3, 0.3, 0.9, 0.1, 0.2])
    assert peak_frames(d).tolist() == [True, False, True, False, False, True, False, True]


def test_pivot_tokens_follow_their_frames():
    distance = torch.tensor([1.0, 0.1, 0.3, 0.2, 0.15, 0.1, 0.9, 0.1])  # peaks: frames 0, 2, 6
    share = torch.zeros(4, 4)
    share[0, 0] = 1.0  # clip 0, from frame 0 (a peak)
    share[1, 1] = 1.0  # clip 0, from frame 1 (not a peak)
    share[2, 2] = 1.0  # clip 1, from frame 6 (a peak)
    share[3, :] = 0.25  # clip 1, spread evenly: 1/4 from the peak frame
    peaks = peak_frames(distance)
    assert peaks.nonzero().squeeze(1).tolist() == [0, 2, 6]
    assert pivot_tokens(share, distance, 4).tolist() == [True, False, True, False]


def test_chunk_cache_is_compressed_to_the_keep_ratio_and_keeps_pivots(tiny_model):
    runner = tiny_model.runner
    torch.manual_seed(0)
    hidden = torch.randn(1, 40, 64)
    pivots = torch.zeros(40, dtype=torch.bool)
    pivots[[3, 17, 31]] = True
    full, small = KVCache(4), KVCache(4)
    forward_chunk(runner, hidden, 0, full)
    forward_chunk(runner, hidden, 0, small, keep_ratio=0.25, pivots=pivots)
    for layer in range(4):
        assert small.length(layer) == math.ceil(0.25 * 40) and small.next_position[layer] == 40
        # every kept entry is one of the uncompressed entries, in order, pivots among them
        distance = (small.keys[layer][0, 0][:, None] - full.keys[layer][0, 0][None]).norm(dim=-1)
        rows = distance.argmin(dim=1)
        assert torch.allclose(distance.min(dim=1).values, torch.zeros(10), atol=1e-5)
        assert rows.tolist() == sorted(rows.tolist()) and {3, 17, 31} <= set(rows.tolist())


def test_answer_with_pivotkv_keeps_text_and_shrinks_the_video(tiny_model):
    sample = next(iter(SyntheticCaptions(16, 16, size=32)))
    plain = tiny_model.answer(sample["frames"], "Describe the video.", max_new_tokens=3, dropout=False)
    squeezed = tiny_model.answer(sample["frames"], "Describe the video.", max_new_tokens=3,
                                 pivotkv=PivotKVConfig(chunk_frames=8, max_input_length=200))
    total = plain["prompt_tokens"]
    visual = 4 * 64
    ratio = 200 / total
    per_token = plain["kv_cache_bytes"] / (total + len(plain["token_ids"]))
    expected = (total - visual) + 2 * math.ceil(ratio * 128) + len(squeezed["token_ids"])
    assert squeezed["kv_cache_bytes"] == per_token * expected


def test_answers_with_bfloat16_weights_without_autocast(tiny_config):
    """What `longvid ask --dtype bfloat16` does on a GPU, here on the CPU: pixels, merging,
    projector, prefill and decoding all follow the weights' dtype."""
    import copy

    from longvid.model.videollm import VideoLLM

    model = VideoLLM.from_config(copy.deepcopy(tiny_config), dtype="bfloat16").eval()
    frames = next(iter(SyntheticCaptions(8, 8)))["frames"]
    plain = model.answer(frames, "Describe the video.", max_new_tokens=2, dropout=False)
    chunked = model.answer(frames, "Describe the video.", max_new_tokens=2, pivotkv=PivotKVConfig(4, 150))
    assert plain["kv_cache_bytes"] > chunked["kv_cache_bytes"] > 0
