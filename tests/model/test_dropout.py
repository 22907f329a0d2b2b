"""Progressive visual dropout inside the decoder: exact token counts per layer, renumbered
positions, targets kept with their tokens, and attention scores that match HF's own attention."""

import copy

import torch

from longvid.model.toydata import SyntheticCaptions
from longvid.model.videollm import VideoLLM


def batch_of(model, n=2, frames=8):
    source = iter(SyntheticCaptions(frames, frames, seed=3))
    return [model.prepare(next(source)) for _ in range(n)]


def layer_inputs(model):
    """What each decoder layer really receives: (sequence length, position ids) per call."""
    seen = []
    hooks = [layer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0].shape[1], kwargs["position_ids"].clone())), with_kwargs=True)
        for layer in model.lm.get_decoder().layers]
    return seen, hooks


def test_token_counts_after_merging_and_each_dropout_layer(tiny_model):
    batch = batch_of(tiny_model)
    text = [len(s.ids) for s in batch]
    seen, hooks = layer_inputs(tiny_model)
    counts = []
    tiny_model(batch, counts=counts)
    for h in hooks:
        h.remove()
    # 8 frames = 2 clips x 64 merged tokens; dropout before layer 1 keeps 75%, before layer 3 25%
    assert counts == [[128, 128], [96, 96], [96, 96], [32, 32]]
    longest = [max(t + v for t in text) for v in (128, 96, 96, 32)]
    assert [length for length, _ in seen] == longest
    for length, positions in seen:  # renumbered after each drop: 0..n-1 in every row
        assert torch.equal(positions[0], torch.arange(length))


def test_custom_plan_and_dropout_off(tiny_config):
    config = copy.deepcopy(tiny_config)
    config.hico.dropout_layers, config.hico.dropout_ratios, config.hico.dropout_modes = [2], [0.5], ["attention"]
    model = VideoLLM.from_config(config)
    counts = []
    model(batch_of(model, 1), counts=counts)
    assert counts == [[128], [128], [64], [64]]
    config.hico.dropout = False
    model = VideoLLM.from_config(config)
    counts = []
    model(batch_of(model, 1), counts=counts)
    assert counts == [[128]] * 4


def test_targets_stay_with_their_tokens(tiny_model, tiny_config):
    batch = batch_of(tiny_model)
    full_config = copy.deepcopy(tiny_config)
    full_config.hico.dropout_ratios = [1.0, 1.0]  # same plan, nothing dropped
    full = VideoLLM.from_config(full_config)
    dropped, kept = tiny_model(batch), full(batch)
    assert int(dropped["supervised"]) == int(kept["supervised"]) == sum(
        sum(1 for label in s.labels if label != -100) for s in batch)
    assert not torch.isclose(dropped["loss_sum"], kept["loss_sum"])  # dropping changed what the answer saw
    seq = tiny_model.build_sequence(batch)
    keep = seq.valid & ~seq.visual
    text_targets = [seq.targets[r][keep[r]].tolist() for r in range(2)]
    after = seq.gather(keep)
    assert [after.targets[r][after.valid[r]].tolist() for r in range(2)] == text_targets
    assert not after.visual.any()


def test_attention_scores_match_eager_attention(tiny_model):
    model = tiny_model
    seq = model.build_sequence(batch_of(model, 1))
    layer = model.lm.get_decoder().layers[2]
    scores = model.runner.visual_scores(seq, layer, 0)
    # the same quantity from HF's eager attention: probabilities from the query rows, head/query mean
    x = layer.input_layernorm(seq.hidden)
    rotary = model.lm.get_decoder().rotary_emb(x, seq.positions)
    length = x.shape[1]
    mask = torch.full((length, length), float("-inf")).triu(1)[None, None]
    model.lm.config._attn_implementation = "eager"
    try:
        _, weights = layer.self_attn(hidden_states=x, position_embeddings=rotary, attention_mask=mask)
    finally:
        model.lm.config._attn_implementation = "sdpa"
    queries = seq.query[0].nonzero().squeeze(1)
    expected = weights[0][:, queries].mean(dim=(0, 1))
    assert torch.allclose(scores, expected.detach(), atol=1e-5)


def test_an_image_enters_as_one_clip_and_bad_frames_are_refused(tiny_model):
    import pytest

    from longvid.model.videollm import SampleError

    sample = next(iter(SyntheticCaptions(4, 4)))
    image = dict(sample, frames=sample["frames"][:1])
    prepared = tiny_model.prepare(image)
    assert prepared.frames.shape[0] == 4 and prepared.visual_tokens == 64
    with pytest.raises(SampleError, match="multiple of 4"):
        tiny_model.prepare(dict(sample, frames=sample["frames"][:3]))
    with pytest.raises(SampleError, match="uint8"):
        tiny_model.prepare(dict(sample, frames=sample["frames"].float()))
