"""The vision path: a Hugging Face vision tower applied per 4-frame clip, then HiCo clip-level merging.

Frames arrive as ``uint8 [T, H, W, 3]`` (T a multiple of 4); out come merged tokens in clip order.
It never decodes video and never holds more than ``frames_per_batch`` frames of activations at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import HiCoConfig, VisionConfig
from .hico import bipartite_merge

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
HALF_MEAN, HALF_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
# model_type of a full image-text checkpoint → the vision-only class that loads its tower
VISION_ONLY_CLASSES = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel", "siglip2": "Siglip2VisionModel"}


class VisionError(ValueError):
    pass


def load_tower(name_or_path: str) -> nn.Module:
    """The vision tower named by a hub id or folder; full CLIP/SigLIP checkpoints give their tower."""
    import transformers

    if not name_or_path:
        raise VisionError("model.vision.name_or_path is empty: name a vision tower (hub id or folder)")
    config = transformers.AutoConfig.from_pretrained(name_or_path)
    if getattr(config, "vision_config", None) is not None and config.model_type in VISION_ONLY_CLASSES:
        cls = getattr(transformers, VISION_ONLY_CLASSES[config.model_type])
        return cls.from_pretrained(name_or_path)
    return transformers.AutoModel.from_pretrained(name_or_path)


@dataclass
class EncodedVideo:
    """Merged visual tokens of one video and what PivotKV needs to find pivot tokens."""

    tokens: torch.Tensor  # [num_clips * tokens_per_clip, width]
    frame_share: torch.Tensor | None = None  # [tokens, clip_frames]: share of each token's patches per frame
    frame_distance: torch.Tensor | None = None  # [T]: 1 - cos to the previous frame, patch-averaged


class VisionEncoder(nn.Module):
    def __init__(self, tower: nn.Module, vision: VisionConfig, hico: HiCoConfig):
        super().__init__()
        self.tower = tower
        self.vision = vision
        self.hico = hico
        if getattr(tower, "use_head", None) is not None:
            tower.use_head = False  # SigLIP's pooling head feeds nothing of ours
        tower_config = tower.config
        self.width = tower_config.hidden_size
        self.patch_size = int(getattr(tower_config, "patch_size", 16))
        self.native_size = int(getattr(tower_config, "image_size", 224))
        default_mean, default_std = (HALF_MEAN, HALF_STD) if "siglip" in tower_config.model_type else (CLIP_MEAN, CLIP_STD)
        # buffers follow the module's dtype and device, so pixels match the tower's weights
        self.register_buffer("mean", torch.tensor(vision.mean or default_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(vision.std or default_std).view(1, 3, 1, 1), persistent=False)
        self.image_size = vision.image_size or self.native_size
        self._key_module = self._find_key_module()

    def _find_key_module(self) -> nn.Module | None:
        if self.hico.merge_metric != "keys":
            return None
        keys = [m for name, m in self.tower.named_modules() if name.endswith(("k_proj", ".key"))]
        layer = self.vision.feature_layer
        index = len(keys) + layer if layer < 0 else layer - 1  # hidden_states[i] is the output of layer i-1
        if not keys or not 0 <= index < len(keys):
            return None  # no attention keys to read: fall back to the features themselves
        return keys[index]

    def tokens_per_clip_unmerged(self, image_size: int | None = None) -> int:
        side = (image_size or self.image_size) // self.patch_size
        return side * side * self.hico.clip_frames

    def tokens_per_clip(self, image_size: int | None = None) -> int:
        if self.hico.merge:
            return min(self.hico.tokens_per_frame * self.hico.clip_frames, self.tokens_per_clip_unmerged(image_size))
        return self.tokens_per_clip_unmerged(image_size)

    def visual_tokens(self, num_frames: int, image_size: int | None = None) -> int:
        """How many LLM tokens ``num_frames`` frames become (before dropout)."""
        return (num_frames // self.hico.clip_frames) * self.tokens_per_clip(image_size)

    def _pixels(self, frames: torch.Tensor, size: int) -> torch.Tensor:
        x = frames.to(self.mean.device).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return ((x - self.mean) / self.std).to(self.mean.dtype)

    def _run_tower(self, pixels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[units, tokens, C]`` and the merge metric of one batch (units: frames or clips)."""
        captured = {}
        hook = None
        if self._key_module is not None:
            hook = self._key_module.register_forward_hook(lambda m, i, o: captured.__setitem__("keys", o))
        kwargs = {"interpolate_pos_encoding": True} if size != self.native_size else {}
        try:
            out = self.tower(pixel_values=pixels, output_hidden_states=True, **kwargs)
        finally:
            if hook is not None:
                hook.remove()
        features = out.hidden_states[self.vision.feature_layer]
        expected = (size // self.patch_size) ** 2 * (self.hico.clip_frames if self.vision.kind == "video" else 1)
        extra = features.shape[1] - expected  # CLS / register tokens come first
        if extra < 0:
            raise VisionError(f"tower gave {features.shape[1]} tokens, expected at least {expected}")
        features = features[:, extra:]
        metric = features
        if "keys" in captured:
            keys = captured["keys"][:, extra:]
            heads = getattr(self.tower.config, "num_attention_heads", 1)
            metric = keys.reshape(*keys.shape[:2], heads, -1).mean(dim=2)  # per-head-averaged keys
        return features, metric

    def _grad_context(self):
        trainable = any(p.requires_grad for p in self.tower.parameters())
        return contextlib.nullcontext() if trainable else torch.no_grad()

    def encode(self, frames: torch.Tensor, image_size: int | None = None, with_pivots: bool = False) -> EncodedVideo:
        """Merged tokens of ``frames`` ``uint8 [T, H, W, 3]``, clip after clip."""
        clip = self.hico.clip_frames
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise VisionError(f"frames must be [T, H, W, 3], got {tuple(frames.shape)}")
        if frames.shape[0] == 0 or frames.shape[0] % clip:
            raise VisionError(f"frame count must be a positive multiple of {clip}, got {frames.shape[0]}")
        size = image_size or self.image_size
        step = max(clip, self.vision.frames_per_batch // clip * clip)
        tokens, shares, distances, previous = [], [], [], None
        for start in range(0, frames.shape[0], step):
            batch = frames[start : start + step]
            pixels = self._pixels(batch, size)
            with self._grad_context():
                if self.vision.kind == "video":
                    pixels = pixels.reshape(-1, clip, *pixels.shape[1:])
                features, metric = self._run_tower(pixels, size)
            # features: [frames, N, C] (image tower) or [clips, clip*N, C] (video tower) → per clip
            per_frame = features.reshape(batch.shape[0], -1, features.shape[-1])
            if with_pivots:
                d, previous = _frame_distances(per_frame.detach(), previous)
                distances.append(d)
            merged, share = self._merge_clips(per_frame, metric.reshape(batch.shape[0], -1, metric.shape[-1]))
            tokens.append(merged.reshape(-1, merged.shape[-1]))
            if with_pivots:
                shares.append(share.reshape(-1, clip))
        return EncodedVideo(
            tokens=torch.cat(tokens),
            frame_share=torch.cat(shares) if with_pivots else None,
            frame_distance=torch.cat(distances) if with_pivots else None,
        )

    def _merge_clips(self, per_frame: torch.Tensor, metric: torch.Tensor):
        clip = self.hico.clip_frames
        frames, n, channels = per_frame.shape
        clips = per_frame.reshape(frames // clip, clip * n, channels)
        clip_metric = metric.reshape(frames // clip, clip * n, metric.shape[-1])
        # which frame of the clip each patch token came from, carried through merging as a share
        frame_of_token = torch.arange(clip, device=clips.device).repeat_interleave(n)
        onehot = F.one_hot(frame_of_token, clip).float().expand(clips.shape[0], -1, -1)
        if not self.hico.merge:
            return clips, onehot
        target = self.hico.tokens_per_frame * clip
        merged, share, _ = bipartite_merge(clips, target, metric=clip_metric, extra=onehot)
        return merged, share


def _frame_distances(per_frame: torch.Tensor, previous: torch.Tensor | None):
    """DPSelect's ``d[t] = 1 - cos(V[t], V[t-1])`` per patch, averaged over patches (frame level);
    the first frame of the video counts as maximally distant. Returns (d, last frame's features)."""
    feats = per_frame.float()
    prev = torch.cat([feats[:1] if previous is None else previous[None], feats[:-1]])
    d = 1.0 - F.cosine_similarity(feats, prev, dim=-1).mean(dim=-1)
    if previous is None:
        d[0] = 1.0
    return d, feats[-1]
