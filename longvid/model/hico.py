"""HiCo clip-level compression: repeated bipartite soft matching (ToMe) down to a fixed token count
per clip, size-weighted, then the 2-layer MLP projector into the LLM width (SEEDS.md §2).

Pure tensor code: it never loads a model and never changes the order of what it keeps in time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _merge_round(metric, tensors, size, r: int):
    """One bipartite round on ``[B, N, *]`` tensors: the ``r`` A-tokens most similar to a B-token
    are folded into it by a size-weighted mean. Returns the shortened metric, tensors and size."""
    a_metric, b_metric = metric[:, ::2], metric[:, 1::2]
    a_norm = F.normalize(a_metric.float(), dim=-1)
    b_norm = F.normalize(b_metric.float(), dim=-1)
    scores = a_norm @ b_norm.transpose(1, 2)  # [B, Na, Nb] cosine similarity A→B
    best_score, best_b = scores.max(dim=-1)  # each A token's closest B token
    order = best_score.argsort(dim=-1, descending=True)
    src = order[:, :r]  # A tokens that merge away
    unmerged = order[:, r:].sort(dim=-1).values  # A tokens that stay, kept in their order
    dst = best_b.gather(1, src)  # their partners in B

    def merge(x):
        # x: [B, N, C] already multiplied by size; returns [B, N - r, C]
        a, b = x[:, ::2], x[:, 1::2]
        channels = x.shape[-1]
        kept_a = a.gather(1, unmerged[..., None].expand(-1, -1, channels))
        moving = a.gather(1, src[..., None].expand(-1, -1, channels))
        b = b.scatter_reduce(1, dst[..., None].expand(-1, -1, channels), moving, reduce="sum")
        return torch.cat([kept_a, b], dim=1)

    new_size = merge(size[..., None])  # [B, N - r, 1]
    outputs = [merge(t * size[..., None]) / new_size for t in (metric, *tensors)]
    return outputs[0], outputs[1:], new_size[..., 0]


def bipartite_merge(
    x: torch.Tensor,
    target: int,
    metric: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Merge ``x`` ``[B, N, C]`` down to ``target`` tokens per row by repeated bipartite soft matching.

    ``metric`` ``[B, N, M]`` scores similarity (defaults to ``x``); ``extra`` ``[B, N, E]`` is
    carried along with the same size weights (used for pivot masks). Each round merges
    ``r = min(N - target, N // 2)`` tokens. The result is sorted by the size-weighted mean of the
    original token positions, so merged tokens stay roughly in (time, space) order.
    Returns ``(merged x, merged extra or None, size)``; ``size`` counts the patches behind each token.
    """
    batch, n, _ = x.shape
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    if n <= target:
        return x, extra, torch.ones(batch, n, device=x.device, dtype=x.dtype)
    metric = x if metric is None else metric
    position = torch.arange(n, device=x.device, dtype=torch.float32).expand(batch, n)[..., None]
    tensors = [x.float(), position] + ([extra.float()] if extra is not None else [])
    size = torch.ones(batch, n, device=x.device, dtype=torch.float32)
    metric = metric.float()
    while n > target:
        r = min(n - target, n // 2)
        metric, tensors, size = _merge_round(metric, tensors, size, r)
        n -= r
    order = tensors[1][..., 0].argsort(dim=-1)
    gathered = [t.gather(1, order[..., None].expand(-1, -1, t.shape[-1])) for t in tensors]
    merged_extra = gathered[2] if extra is not None else None
    return gathered[0].to(x.dtype), merged_extra, size.gather(1, order)


class Projector(nn.Module):
    """Linear → GELU → Linear from the vision width to the LLM width (no separator tokens)."""

    def __init__(self, vision_width: int, llm_width: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_width, llm_width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(llm_width, llm_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
