"""The vision path on tiny random towers of every supported family: token counts per clip after
merging are exactly as configured, merging off keeps every patch, bad frame counts are refused."""

import pytest
import torch

from longvid.model.config import HiCoConfig, VisionConfig
from longvid.model.tiny import tiny_vision
from longvid.model.vision import VisionEncoder, VisionError, load_tower


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    return {kind: tiny_vision(str(root / kind), kind) for kind in ("clip", "siglip", "vit", "videomae")}


def frames(n, size=40):
    return torch.randint(0, 255, (n, size, size, 3), dtype=torch.uint8)


@pytest.mark.parametrize("kind", ["clip", "siglip", "vit", "videomae"])
def test_clip_merging_gives_16_tokens_per_frame(towers, kind):
    encoder = VisionEncoder(load_tower(towers[kind]), VisionConfig(kind="video" if kind == "videomae" else "image"),
                            HiCoConfig())
    out = encoder.encode(frames(12))
    assert out.tokens.shape == (3 * 64, 32)  # 3 clips x (4 frames x 16 tokens), tower width 32
    assert encoder.visual_tokens(12) == 3 * 64


def test_merging_off_keeps_every_patch_and_metric_choice_matters(towers):
    tower = load_tower(towers["clip"])
    off = VisionEncoder(tower, VisionConfig(), HiCoConfig(merge=False))
    assert off.encode(frames(8)).tokens.shape == (2 * 4 * 36, 32)  # 48 px / 8 px patches = 36 per frame
    video = frames(8)
    by_keys = VisionEncoder(tower, VisionConfig(), HiCoConfig(merge_metric="keys"))
    by_features = VisionEncoder(tower, VisionConfig(), HiCoConfig(merge_metric="features"))
    assert by_keys._key_module is not None and by_features._key_module is None
    assert not torch.allclose(by_keys.encode(video).tokens, by_features.encode(video).tokens)


def test_batches_of_frames_give_the_same_tokens(towers):
    tower = load_tower(towers["siglip"])
    video = frames(16)
    one_go = VisionEncoder(tower, VisionConfig(frames_per_batch=64), HiCoConfig()).encode(video, with_pivots=True)
    in_fours = VisionEncoder(tower, VisionConfig(frames_per_batch=4), HiCoConfig()).encode(video, with_pivots=True)
    assert torch.allclose(one_go.tokens, in_fours.tokens, atol=1e-5)
    assert torch.allclose(one_go.frame_distance, in_fours.frame_distance, atol=1e-5)
    assert one_go.frame_distance[0] == 1.0 and one_go.frame_share.shape == (4 * 64, 4)
    assert torch.allclose(one_go.frame_share.sum(dim=1), torch.ones(4 * 64))


def test_higher_resolution_stage_keeps_the_token_budget(towers):
    encoder = VisionEncoder(load_tower(towers["clip"]), VisionConfig(), HiCoConfig())
    out = encoder.encode(frames(4, size=64), image_size=64)  # 64 patches per frame before merging
    assert out.tokens.shape == (64, 32)


def test_frame_counts_must_be_whole_clips(towers):
    encoder = VisionEncoder(load_tower(towers["clip"]), VisionConfig(), HiCoConfig())
    with pytest.raises(VisionError, match="multiple of 4"):
        encoder.encode(frames(6))
