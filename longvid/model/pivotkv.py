"""ReTaKe's PivotKV as a prefill option: the video goes through the LLM in chunks; after each layer the
chunk's cached keys/values are cut to the top ``r`` share by the attention they receive from the
chunk's own queries, pivot tokens (from DPSelect peaks) always kept (SEEDS.md §6).

Text is never compressed and decoding is not compressed. Inference only; no gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .llm import KVCache, apply_rotary, project_qk


@dataclass
class PivotKVConfig:
    chunk_frames: int = 32  # frames per prefill chunk (ReTaKe's 32)
    max_input_length: int = 32000  # r = min(1, max_input_length / input length)


def peak_frames(distance: torch.Tensor) -> torch.Tensor:
    """DPSelect's peak mask: frames whose distance is the maximum of its window of 3 (no threshold)."""
    d = distance.clone().float()
    d[0] = 1.0
    left = torch.cat([d.new_full((1,), float("-inf")), d[:-1]])
    right = torch.cat([d[1:], d.new_full((1,), float("-inf"))])
    return (d >= left) & (d >= right)


def pivot_tokens(frame_share: torch.Tensor, frame_distance: torch.Tensor, clip_frames: int) -> torch.Tensor:
    """Merged tokens that come mostly (>= half their patches) from peak frames. Merged tokens no
    longer map to single patches, so the frame-level DPSelect variant decides."""
    peaks = peak_frames(frame_distance).float().view(-1, clip_frames)  # [clips, clip_frames]
    per_clip = frame_share.shape[0] // peaks.shape[0]
    token_clip = torch.arange(frame_share.shape[0], device=frame_share.device) // per_clip
    return (frame_share * peaks[token_clip]).sum(dim=-1) >= 0.5


@torch.no_grad()
def _chunk_scores(layer, hidden: torch.Tensor, rotary) -> torch.Tensor:
    """Attention each chunk key receives from the chunk's queries, no causal mask, head/query mean."""
    x = layer.input_layernorm(hidden)
    q, k = project_qk(layer.self_attn, x, torch.arange(x.shape[1], device=x.device))
    cos, sin = rotary
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    probs = ((q.float() @ k.float().transpose(-1, -2)) * layer.self_attn.scaling).softmax(dim=-1)
    return probs.mean(dim=(0, 1, 2))


@torch.no_grad()
def forward_chunk(runner, hidden: torch.Tensor, start: int, cache: KVCache,
                  keep_ratio: float = 1.0, pivots: torch.Tensor | None = None) -> torch.Tensor:
    """One chunk ``[1, n, D]`` at positions ``start..start+n`` through all layers, appending to
    ``cache``; with ``keep_ratio`` < 1 the chunk's cache entries are compressed after each layer."""
    n = hidden.shape[1]
    positions = torch.arange(start, start + n, device=hidden.device)[None]
    rotary = runner.base.rotary_emb(hidden, positions)
    keep_n = max(1, math.ceil(keep_ratio * n))
    for index, layer in enumerate(runner.layers):
        keep = None
        if keep_n < n:
            scores = _chunk_scores(layer, hidden, rotary)
            if pivots is not None:
                scores = torch.where(pivots, torch.ones_like(scores), scores)
            keep = scores.topk(keep_n).indices.sort().values
        past = cache.length(index)
        mask = None
        if past:
            mask = torch.ones(n, past + n, dtype=torch.bool, device=hidden.device)
            mask[:, past:] = torch.ones(n, n, dtype=torch.bool, device=hidden.device).tril()
            mask = mask[None, None]
        out = layer(hidden, attention_mask=mask, position_ids=positions, past_key_values=cache,
                    use_cache=True, position_embeddings=rotary)
        hidden = out[0] if isinstance(out, tuple) else out
        if keep is not None:
            cache.keep_tail(index, n, keep)
        cache.next_position[index] = start + n
    return hidden


@torch.no_grad()
def pivotkv_prefill(model, sample, config: PivotKVConfig, image_size: int | None = None):
    """Prefill ``sample`` (a PreparedSample with a generation prompt): text before the video, the
    video in chunks with KV compression, then the question. Returns (last hidden [1, D], cache)."""
    runner = model.runner
    clip = model.config.hico.clip_frames
    encoded = model.vision.encode(sample.frames, image_size, with_pivots=True)
    visual = model.projector(encoded.tokens)
    pivots = pivot_tokens(encoded.frame_share, encoded.frame_distance, clip)
    device = visual.device
    ids = torch.tensor(sample.ids, device=device)
    text = runner.embed(ids)
    before, after = text[: sample.visual_at], text[sample.visual_at :]
    total = sample.length
    ratio = min(1.0, config.max_input_length / total)
    chunk = max(1, config.chunk_frames // clip) * model.vision.tokens_per_clip(image_size)
    cache = KVCache(len(runner.layers))
    position = 0
    if before.shape[0]:
        forward_chunk(runner, before[None], position, cache)
        position += before.shape[0]
    for begin in range(0, visual.shape[0], chunk):
        part = visual[begin : begin + chunk].to(text.dtype)[None]
        forward_chunk(runner, part, position, cache, ratio, pivots[begin : begin + chunk])
        position += part.shape[1]
    hidden = forward_chunk(runner, after[None], position, cache)
    return runner.base.norm(hidden)[:, -1], cache
