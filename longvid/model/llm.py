"""The causal LM's decoder driven layer by layer, with HiCo's progressive visual dropout inside it:
before configured layers, visual tokens are thinned (evenly spaced, then by text→video attention),
positions renumbered and targets, masks and query marks gathered with them (SEEDS.md §2).

Works with any Hugging Face decoder of the Llama/Qwen2 family (``model.layers``, ``norm``,
``rotary_emb``). It never drops text tokens and knows nothing of distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from .config import HiCoConfig

IGNORE = -100  # target of positions that are not supervised


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` ``[B, heads, L, d]`` with ``cos``/``sin`` ``[B, L, d]``."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class KVCache:
    """Keys and values per layer. Layers may hold different lengths (dropout, PivotKV), so each
    keeps its own next position. Implements the one method HF attention calls: ``update``."""

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.next_position = [0] * num_layers

    def update(self, key, value, layer_idx, *args, **kwargs):
        if self.keys[layer_idx] is None:
            self.keys[layer_idx], self.values[layer_idx] = key, value
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def length(self, layer_idx: int) -> int:
        keys = self.keys[layer_idx]
        return 0 if keys is None else keys.shape[-2]

    def keep_tail(self, layer_idx: int, tail: int, keep: torch.Tensor) -> None:
        """Of the last ``tail`` cached entries of a layer, keep only those at ``keep`` (sorted)."""
        for store in (self.keys, self.values):
            full = store[layer_idx]
            head, last = full[..., : full.shape[-2] - tail, :], full[..., full.shape[-2] - tail :, :]
            store[layer_idx] = torch.cat([head, last.index_select(-2, keep)], dim=-2)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)


@dataclass
class Sequence:
    """A right-padded batch inside the decoder; every field is ``[B, L]`` except ``hidden``."""

    hidden: torch.Tensor  # [B, L, D]
    valid: torch.Tensor  # bool: a real token, not padding
    visual: torch.Tensor  # bool: a visual token (the only kind ever dropped)
    query: torch.Tensor  # bool: tokens whose attention ranks the visual tokens (before each answer)
    positions: torch.Tensor  # long: rotary positions, renumbered after each drop
    targets: torch.Tensor | None  # long: the token each position must predict, or IGNORE
    original_visual: torch.Tensor  # [B] long: visual tokens per row before any drop

    def gather(self, keep: torch.Tensor) -> "Sequence":
        """Keep the marked positions of each row, in order; rows re-padded on the right."""
        counts = keep.sum(dim=1)
        length = int(counts.max())
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :length]
        take = lambda t: None if t is None else t.gather(1, order)  # noqa: E731
        hidden = self.hidden.gather(1, order[..., None].expand(-1, -1, self.hidden.shape[-1]))
        valid = torch.arange(length, device=keep.device)[None] < counts[:, None]
        positions = torch.arange(length, device=keep.device).expand(keep.shape[0], -1).contiguous()
        targets = take(self.targets)
        if targets is not None:
            targets = targets.masked_fill(~valid, IGNORE)
        return replace(self, hidden=hidden, valid=valid, visual=take(self.visual) & valid,
                       query=take(self.query) & valid, positions=positions, targets=targets)


def keep_count(ratio: float, original: int) -> int:
    return int(math.floor(ratio * original + 0.5))


def evenly_spaced(n: int, k: int) -> list[int]:
    """Middles of ``k`` equal segments of ``[0, n)`` (k <= n): the uniform drop's choice."""
    return [int((2 * i + 1) * n // (2 * k)) for i in range(k)]


class DecoderRunner:
    """Runs ``lm``'s decoder layers with the dropout plan of ``hico``."""

    def __init__(self, lm: nn.Module, hico: HiCoConfig):
        self.lm = lm
        self.base = lm.get_decoder()
        self.layers = self.base.layers
        self.hico = hico
        self.plan = dict(zip(hico.dropout_layers, zip(hico.dropout_ratios, hico.dropout_modes)))
        too_deep = [k for k in self.plan if not 0 < k < len(self.layers)]
        if hico.dropout and too_deep:
            raise ValueError(f"dropout layers {too_deep} outside 1..{len(self.layers) - 1} of this LLM")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def run(self, seq: Sequence, cache: KVCache | None = None, dropout: bool = True,
            counts: list | None = None) -> Sequence:
        """All decoder layers, then the final norm. ``counts`` (if given) receives, per layer,
        the visual tokens per row that enter it."""
        rotary = None
        for index, layer in enumerate(self.layers):
            if dropout and self.hico.dropout and index in self.plan:
                ratio, mode = self.plan[index]
                seq = self._drop(seq, layer, ratio, mode)
                rotary = None
            if rotary is None:
                rotary = self.base.rotary_emb(seq.hidden, seq.positions)
                mask = None if bool(seq.valid.all()) else _padded_causal_mask(seq.valid)
            if counts is not None:
                counts.append(seq.visual.sum(dim=1).tolist())
            out = layer(seq.hidden, attention_mask=mask, position_ids=seq.positions, past_key_values=cache,
                        use_cache=cache is not None, position_embeddings=rotary)
            seq.hidden = out[0] if isinstance(out, tuple) else out
            if cache is not None:
                cache.next_position[index] = seq.hidden.shape[1]
        seq.hidden = self.base.norm(seq.hidden)
        return seq

    def loss(self, seq: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy over supervised positions and their count (logits only there)."""
        picked = seq.targets != IGNORE
        logits = self.lm.get_output_embeddings()(seq.hidden[picked])
        total = nn.functional.cross_entropy(logits.float(), seq.targets[picked], reduction="sum")
        return total, picked.sum()

    def _drop(self, seq: Sequence, layer: nn.Module, ratio: float, mode: str) -> Sequence:
        keep = seq.valid & ~seq.visual
        for row in range(seq.hidden.shape[0]):
            visual_index = seq.visual[row].nonzero().squeeze(1)
            target = keep_count(ratio, int(seq.original_visual[row]))
            if target >= visual_index.numel():
                keep[row, visual_index] = True
                continue
            if mode == "uniform":
                chosen = visual_index[evenly_spaced(visual_index.numel(), target)]
            else:
                scores = self.visual_scores(seq, layer, row)[visual_index]
                chosen = visual_index[scores.topk(target).indices.sort().values]
            keep[row, chosen] = True
        return seq.gather(keep)

    @torch.no_grad()
    def visual_scores(self, seq: Sequence, layer: nn.Module, row: int) -> torch.Tensor:
        """Softmax attention that ``layer`` would give from the row's query tokens to every key,
        averaged over heads and queries (``[L]``)."""
        length = int(seq.valid[row].sum())
        x = layer.input_layernorm(seq.hidden[row : row + 1, :length])
        query_index = seq.query[row, :length].nonzero().squeeze(1)
        if query_index.numel() == 0:
            query_index = torch.tensor([length - 1], device=x.device)
        q, k = project_qk(layer.self_attn, x, query_index)
        cos, sin = self.base.rotary_emb(x, seq.positions[row : row + 1, :length])
        q = apply_rotary(q, cos[:, query_index], sin[:, query_index])
        k = apply_rotary(k, cos, sin)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        logits = (q.float() @ k.float().transpose(-1, -2)) * layer.self_attn.scaling
        causal = torch.arange(length, device=x.device)[None, :] > query_index[:, None]
        probs = logits.masked_fill(causal, float("-inf")).softmax(dim=-1)
        scores = torch.zeros(seq.hidden.shape[1], device=x.device)
        scores[:length] = probs.mean(dim=(0, 1, 2))
        return scores


def project_qk(attn: nn.Module, x: torch.Tensor, query_index: torch.Tensor):
    """Queries of the chosen positions and keys of all positions, ``[1, heads, n, head_dim]``."""
    head_dim = attn.head_dim
    q = attn.q_proj(x[:, query_index]).view(1, query_index.numel(), -1, head_dim)
    k = attn.k_proj(x).view(1, x.shape[1], -1, head_dim)
    if getattr(attn, "q_norm", None) is not None:  # Qwen3-style per-head norms
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q.transpose(1, 2), k.transpose(1, 2)


def _padded_causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, 1, L, L]``: causal and only real keys (right padding keeps every row non-empty)."""
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    return causal[None, None] & valid[:, None, None, :]


@torch.no_grad()
def decode_step(runner: DecoderRunner, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Feed one token id ``[1]`` through every layer at that layer's next position; last hidden."""
    hidden = runner.embed(token.view(1, 1))
    rotary, last_position = None, None
    for index, layer in enumerate(runner.layers):
        position = cache.next_position[index]
        if position != last_position:
            positions = torch.tensor([[position]], device=hidden.device)
            rotary = runner.base.rotary_emb(hidden, positions)
            last_position = position
        out = layer(hidden, attention_mask=None, position_ids=positions, past_key_values=cache,
                    use_cache=True, position_embeddings=rotary)
        hidden = out[0] if isinstance(out, tuple) else out
        cache.next_position[index] = position + 1
    return runner.base.norm(hidden)[:, -1]


@torch.no_grad()
def greedy_decode(runner: DecoderRunner, last_hidden: torch.Tensor, cache: KVCache, max_new_tokens: int,
                  stop_ids: set[int]) -> list[int]:
    """Greedy continuation from the prefill's last hidden state ``[1, D]``."""
    head = runner.lm.get_output_embeddings()
    out: list[int] = []
    hidden = last_hidden
    for _ in range(max_new_tokens):
        token = head(hidden).argmax(dim=-1)
        if int(token) in stop_ids:
            break
        out.append(int(token))
        hidden = decode_step(runner, token, cache)
    return out
