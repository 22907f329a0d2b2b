"""The bundled video LLM: vision tower per 4-frame clip → HiCo merging → MLP projector → causal LM with
progressive visual dropout. Training loss, greedy answers (optionally with PivotKV), save and load.

A plain ``nn.Module``: it never imports Ray or torch.distributed, and never reads video files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from torch import nn

from ..config import from_dict, to_dict
from .config import ModelConfig
from .conversation import IGNORE, encode_conversation, stop_token_ids
from .hico import Projector
from .llm import DecoderRunner, KVCache, Sequence, greedy_decode
from .vision import VisionEncoder, load_tower

MODEL_JSON = "longvid_model.json"
PROJECTOR_FILE = "projector.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class SampleError(ValueError):
    """A sample the model cannot take (bad frames, no conversation); the trainer skips it."""


@dataclass
class PreparedSample:
    key: str
    frames: torch.Tensor  # uint8 [T, H, W, 3]
    ids: list[int]
    labels: list[int]
    visual_at: int
    visual_tokens: int

    @property
    def length(self) -> int:
        return len(self.ids) + self.visual_tokens


class VideoLLM(nn.Module):
    def __init__(self, config: ModelConfig, vision: VisionEncoder, projector: Projector, lm: nn.Module, tokenizer):
        super().__init__()
        self.config = config
        self.vision = vision
        self.projector = projector
        self.lm = lm
        self.tokenizer = tokenizer
        self.runner = DecoderRunner(lm, config.hico)

    # ---- building, saving, loading -------------------------------------------------------
    @classmethod
    def from_config(cls, config: ModelConfig, seed: int = 0, dtype: str = "float32") -> "VideoLLM":
        """Tower and LLM from their names; a fresh projector (seeded), or everything from
        ``config.checkpoint`` when set."""
        if config.checkpoint:
            return cls.from_pretrained(config.checkpoint, dtype=dtype)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not config.llm.name_or_path:
            raise ValueError("model.llm.name_or_path is empty: name a causal LM (hub id or folder)")
        tower = load_tower(config.vision.name_or_path)
        lm = AutoModelForCausalLM.from_pretrained(config.llm.name_or_path, attn_implementation=config.llm.attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(config.llm.name_or_path)
        vision = VisionEncoder(tower, config.vision, config.hico)
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        projector = Projector(vision.width, lm.config.hidden_size)
        torch.set_rng_state(generator_state)
        model = cls(config, vision, projector, lm, tokenizer)
        return model.to(DTYPES[dtype])

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "float32") -> "VideoLLM":
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with open(os.path.join(path, MODEL_JSON), encoding="utf-8") as f:
            config = from_dict(ModelConfig, json.load(f), where=os.path.join(path, MODEL_JSON))
        config.checkpoint = ""
        tower = load_tower(os.path.join(path, "vision"))
        lm = AutoModelForCausalLM.from_pretrained(os.path.join(path, "llm"), attn_implementation=config.llm.attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(os.path.join(path, "llm"))
        vision = VisionEncoder(tower, config.vision, config.hico)
        projector = Projector(vision.width, lm.config.hidden_size)
        projector.load_state_dict(load_file(os.path.join(path, PROJECTOR_FILE)))
        config.vision.name_or_path = os.path.join(path, "vision")
        config.llm.name_or_path = os.path.join(path, "llm")
        return cls(config, vision, projector, lm, tokenizer).to(DTYPES[dtype])

    def save_pretrained(self, path: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        self.vision.tower.save_pretrained(os.path.join(path, "vision"))
        self.lm.save_pretrained(os.path.join(path, "llm"))
        self.tokenizer.save_pretrained(os.path.join(path, "llm"))
        save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()}, os.path.join(path, PROJECTOR_FILE))
        data = to_dict(self.config)
        data["vision"]["name_or_path"], data["llm"]["name_or_path"], data["checkpoint"] = "vision", "llm", ""
        with open(os.path.join(path, MODEL_JSON), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)

    def set_hico(self, hico) -> None:
        """Switch the compression settings (merging, dropout plan): runtime behaviour, no weights."""
        self.config.hico = hico
        self.vision.hico = hico
        self.vision._key_module = self.vision._find_key_module()
        self.runner = DecoderRunner(self.lm, hico)

    def set_trainable(self, parts: list[str]) -> None:
        """Freeze everything but ``parts`` (vision, projector, llm, or all)."""
        wanted = {"vision", "projector", "llm"} if "all" in parts else set(parts)
        for name, module in (("vision", self.vision), ("projector", self.projector), ("llm", self.lm)):
            for p in module.parameters():
                p.requires_grad_(name in wanted)

    # ---- samples → sequences -------------------------------------------------------------
    def prepare(self, sample: dict, image_size: int | None = None, generation: bool = False) -> PreparedSample:
        frames = sample.get("frames")
        clip = self.config.hico.clip_frames
        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.ndim != 4:
            raise SampleError("frames must be a uint8 tensor [T, H, W, 3]")
        if frames.shape[0] == 1:  # an image enters as a clip of itself (as needles do)
            frames = frames.expand(clip, -1, -1, -1)
        if frames.shape[0] == 0 or frames.shape[0] % clip:
            raise SampleError(f"{frames.shape[0]} frames is not a positive multiple of {clip}")
        text = encode_conversation(self.tokenizer, sample.get("conversations") or [], self.config.system_prompt,
                                   add_generation_prompt=generation)
        return PreparedSample(key=str(sample.get("__key__", "")), frames=frames, ids=text.ids, labels=text.labels,
                              visual_at=text.visual_at, visual_tokens=self.vision.visual_tokens(frames.shape[0], image_size))

    def visual_embeddings(self, frames: torch.Tensor, image_size: int | None = None) -> torch.Tensor:
        return self.projector(self.vision.encode(frames, image_size).tokens)

    def _batch_visual(self, batch: list[PreparedSample], image_size: int | None) -> list[torch.Tensor]:
        """Visual embeddings per sample; same-sized frames go through the tower together."""
        if len({tuple(s.frames.shape[1:]) for s in batch}) == 1:
            tokens = self.visual_embeddings(torch.cat([s.frames for s in batch]), image_size)
            return list(tokens.split([s.visual_tokens for s in batch]))
        return [self.visual_embeddings(s.frames, image_size) for s in batch]

    def build_sequence(self, batch: list[PreparedSample], image_size: int | None = None) -> Sequence:
        device = self.projector.fc1.weight.device
        rows = []
        for sample, visual in zip(batch, self._batch_visual(batch, image_size)):
            ids = torch.tensor(sample.ids, dtype=torch.long, device=device)
            text = self.runner.embed(ids)
            at, count = sample.visual_at, visual.shape[0]
            hidden = torch.cat([text[:at], visual.to(text.dtype), text[at:]])
            labels = torch.tensor(sample.labels[:at] + [IGNORE] * count + sample.labels[at:], device=device)
            is_visual = torch.zeros(hidden.shape[0], dtype=torch.bool, device=device)
            is_visual[at : at + count] = True
            rows.append((hidden, labels, is_visual))
        return _pad_rows(rows)

    # ---- training and answering ----------------------------------------------------------
    def forward(self, batch: list[PreparedSample], image_size: int | None = None, counts: list | None = None) -> dict:
        """Summed loss over supervised tokens of ``batch``, their count, and token statistics."""
        seq = self.build_sequence(batch, image_size)
        tokens = int(seq.valid.sum())
        visual = seq.original_visual.clone()
        seq = self.runner.run(seq, dropout=True, counts=counts)
        loss_sum, supervised = self.runner.loss(seq)
        return {"loss_sum": loss_sum, "supervised": supervised, "tokens": tokens, "visual_tokens": visual}

    @torch.no_grad()
    def answer(self, frames: torch.Tensor, prompt: str, max_new_tokens: int = 64, pivotkv=None,
               dropout: bool = True, image_size: int | None = None) -> dict:
        """Greedy answer to ``prompt`` about ``frames``; ``pivotkv`` (a PivotKVConfig) switches to
        chunked prefill with KV compression (and no dropout)."""
        from .pivotkv import pivotkv_prefill

        conversation = [{"from": "human", "value": f"<image>\n{prompt}"}]
        sample = self.prepare({"frames": frames, "conversations": conversation}, image_size, generation=True)
        runner = self.runner
        if pivotkv is not None:
            last, cache = pivotkv_prefill(self, sample, pivotkv, image_size)
        else:
            seq = self.build_sequence([sample], image_size)
            seq.query = torch.zeros_like(seq.valid)
            seq.query[0, -1] = True  # the last prompt token ranks the video (inference)
            cache = KVCache(len(runner.layers))
            seq = runner.run(seq, cache=cache, dropout=dropout)
            last = seq.hidden[:, -1]
        ids = greedy_decode(runner, last, cache, max_new_tokens, stop_token_ids(self.tokenizer))
        return {"text": self.tokenizer.decode(ids, skip_special_tokens=True), "token_ids": ids,
                "prompt_tokens": sample.length, "kv_cache_bytes": cache.nbytes()}


def _pad_rows(rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> Sequence:
    """Right-pad (hidden, labels, is_visual) rows into a Sequence with shifted targets."""
    length = max(r[0].shape[0] for r in rows)
    batch, width = len(rows), rows[0][0].shape[-1]
    device, dtype = rows[0][0].device, rows[0][0].dtype
    hidden = torch.zeros(batch, length, width, device=device, dtype=dtype)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long, device=device)
    visual = torch.zeros(batch, length, dtype=torch.bool, device=device)
    valid = torch.zeros(batch, length, dtype=torch.bool, device=device)
    for i, (h, lab, vis) in enumerate(rows):
        n = h.shape[0]
        hidden[i, :n], labels[i, :n], visual[i, :n], valid[i, :n] = h, lab, vis, True
    # position i predicts token i + 1: shifting once here lets drops carry each target with its position
    targets = torch.cat([labels[:, 1:], torch.full((batch, 1), IGNORE, device=device, dtype=torch.long)], dim=1)
    supervised = targets != IGNORE
    before = torch.cat([torch.zeros(batch, 1, dtype=torch.bool, device=device), supervised[:, :-1]], dim=1)
    query = supervised & ~before  # the token just before each answer span
    positions = torch.arange(length, device=device).expand(batch, -1).contiguous()
    return Sequence(hidden=hidden, valid=valid, visual=visual, query=query, positions=positions,
                    targets=targets, original_visual=visual.sum(dim=1))
