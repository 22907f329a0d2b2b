"""Clip-level merging: exact token counts, conserved mass (size-weighted means), kept order."""

import pytest
import torch

from longvid.model.hico import Projector, bipartite_merge


def test_merges_a_clip_to_the_target_count_with_conserved_mass():
    torch.manual_seed(0)
    x = torch.randn(3, 144, 8)  # 3 clips of 4 frames x 36 patches
    merged, _, size = bipartite_merge(x, 64)
    assert merged.shape == (3, 64, 8)
    assert torch.allclose(size.sum(dim=1), torch.full((3,), 144.0))
    # a size-weighted mean keeps sum(size * token) equal to the sum of the original tokens
    assert torch.allclose((merged * size[..., None]).sum(dim=1), x.sum(dim=1), atol=1e-4)


def test_duplicates_merge_before_distinct_tokens():
    base = torch.eye(16)  # 16 orthogonal tokens
    x = base.repeat_interleave(4, dim=0)[None]  # each repeated 4 times: 64 tokens
    merged, _, size = bipartite_merge(x, 16)
    # every merged token is one of the originals, each from exactly its 4 copies
    assert torch.allclose(merged[0], base, atol=1e-6)
    assert torch.equal(size[0], torch.full((16,), 4.0))


def test_extra_attributes_follow_the_merge_and_order_is_kept():
    x = torch.randn(1, 40, 4)
    position = torch.arange(40, dtype=torch.float32).view(1, 40, 1)
    merged, carried, size = bipartite_merge(x, 10, extra=position)
    assert carried.shape == (1, 10, 1)
    assert torch.all(carried[0, 1:, 0] >= carried[0, :-1, 0])  # sorted by mean source position
    assert torch.isclose((carried[0, :, 0] * size[0]).sum(), position.sum())


def test_fewer_tokens_than_target_pass_through_and_bad_target_fails():
    x = torch.randn(2, 10, 4)
    merged, _, size = bipartite_merge(x, 64)
    assert torch.equal(merged, x) and torch.equal(size, torch.ones(2, 10))
    with pytest.raises(ValueError):
        bipartite_merge(x, 0)


def test_gradients_flow_through_merging_and_projector():
    x = torch.randn(2, 144, 8, requires_grad=True)
    merged, _, _ = bipartite_merge(x, 64)
    out = Projector(8, 12)(merged)
    assert out.shape == (2, 64, 12)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
