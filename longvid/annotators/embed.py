"""Clip embeddings from a Hugging Face image encoder (CLIP / SigLIP family, or any ``AutoModel``
with image features): a few frames per clip (its DPSelect keyframes), one vector per frame, their
mean, L2-normalised: the input of semantic near-duplicate clustering (``pipelines.semantic_dedup``).

Pure model logic: no Ray, no storage. Weights load once in :meth:`ImageEncoder.setup`; frames go
through the model ``batch_size`` images at a time. Never called per clip with one image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

EMBED_DTYPES = ("float16", "float32")


@dataclass
class EncoderConfig:
    model: str = ""  # hub id or local directory of the image encoder (e.g. google/siglip-base-patch16-224); required
    frames_per_clip: int = 4  # keyframes embedded and mean-pooled per clip: the segment stage stores 4 DPSelect keyframes
    longest_edge: int = 256  # decode size before the processor resizes: small decodes, no upscaling for 224-384 px encoders
    batch_size: int = 64  # images per forward pass: fills a GPU for a base-size ViT without risking memory
    device: str = "auto"  # auto: cuda where torch sees a GPU, else cpu
    dtype: str = "auto"  # model weights: auto = float16 on a GPU, float32 on CPU (CPU float16 matmuls are slow)
    store_dtype: str = "float16"  # layer values: float16 halves the layer (cosine error ~1e-3, far below any eps)
    hwaccel: str = "none"  # frame decode (decode.hwaccel): none, or nvdec where present
    dim: int = 0  # length of the image features; 0: read from the model's config (encoder_dim)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def pool_clips(frame_vectors: np.ndarray, counts: list[int]) -> np.ndarray:
    """Per-clip mean of its frames' (normalised) vectors, normalised again: ``[clips, dim]``."""
    frame_vectors = l2_normalise(frame_vectors)
    ends = np.cumsum(counts)
    sums = np.add.reduceat(frame_vectors, ends - np.asarray(counts), axis=0) if len(counts) else frame_vectors[:0]
    return l2_normalise(sums / np.asarray(counts, np.float32)[:, None])


def _features(model, pixel_values):
    """Image features of whatever the model is: CLIP/SigLIP ``get_image_features`` (a tensor, or a
    model output whose ``pooler_output`` is the projected vector in transformers 5), else the
    vision output's pooled vector, else the mean of its last hidden state."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixel_values)
    else:
        out = model(pixel_values=pixel_values)
    if hasattr(out, "image_embeds") and out.image_embeds is not None:
        return out.image_embeds
    if hasattr(out, "pooler_output") and out.pooler_output is not None:
        return out.pooler_output
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state.mean(dim=1)
    return out


class ImageEncoder:
    """One loaded encoder: ``embed_clips(list of [T, H, W, 3] uint8)`` → ``[clips, dim]`` float32."""

    version = "1"

    def __init__(self, config: EncoderConfig):
        if not config.model:
            raise ValueError("the embedding stage needs an encoder: --encoder MODEL (a hub id or a local directory)")
        if config.store_dtype not in EMBED_DTYPES:
            raise ValueError(f"store_dtype must be one of {EMBED_DTYPES}, got {config.store_dtype!r}")
        if config.frames_per_clip < 1 or config.batch_size < 1:
            raise ValueError("frames_per_clip and batch_size must be >= 1")
        self.config = config
        self.model = self.processor = None
        self.dim = 0

    def setup(self) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self.device = resolve_device(self.config.device)
        dtype = self.config.dtype
        if dtype == "auto":
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        self.processor = AutoImageProcessor.from_pretrained(self.config.model)
        self.model = AutoModel.from_pretrained(self.config.model, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.dtype = getattr(torch, dtype)

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        """``[H, W, 3]`` uint8 pictures (any sizes) → ``[n, dim]`` float32 (not normalised),
        ``batch_size`` at a time; the processor resizes each to the model's input."""
        import torch

        # the processors take uint8 RGB (floats are read as 0..1)
        images = [np.asarray(image, np.uint8) for image in images]
        out: list[np.ndarray] = []
        for i in range(0, len(images), self.config.batch_size):
            pixels = self.processor(images=images[i : i + self.config.batch_size], return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                vectors = _features(self.model, pixels.to(self.device, self.dtype))
            out.append(vectors.float().cpu().numpy())
        vectors = np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
        self.dim = vectors.shape[1] if len(vectors) else self.dim
        return vectors

    def embed_clips(self, clips: list[np.ndarray]) -> np.ndarray:
        """Each clip's frames (``[T, H, W, 3]``; sizes may differ between clips) → one
        L2-normalised vector (mean of its normalised frame vectors)."""
        if not clips:
            return np.zeros((0, self.dim), np.float32)
        frames = [frame for clip in clips for frame in clip]
        vectors = pool_clips(self.embed_images(frames), [len(c) for c in clips])
        if self.config.dim and vectors.shape[1] != self.config.dim:
            raise ValueError(f"the encoder gave {vectors.shape[1]} values per image, the layer declares "
                             f"{self.config.dim}: set --encoder.dim {vectors.shape[1]}")
        return vectors

    def producer(self) -> dict:
        """``layer.json``'s producer: the encoder and every setting that changes the vectors."""
        c = self.config
        settings = {"frames_per_clip": c.frames_per_clip, "longest_edge": c.longest_edge, "store_dtype": c.store_dtype,
                    "dim": c.dim,
                    "pooling": "mean of L2-normalised frame vectors, L2-normalised"}
        return {"encoder": c.model, "version": self.version, "settings": settings}


def producer_id(producer: dict) -> str:
    return hashlib.sha1(json.dumps(producer, sort_keys=True).encode()).hexdigest()[:12]




def encoder_dim(model: str) -> int:
    """The length of the encoder's image features, from its ``config.json`` (no weights loaded):
    ``projection_dim`` (CLIP family), else the vision tower's ``hidden_size`` (SigLIP, whose image
    features are the pooled vision output), else the model's own ``hidden_size`` (ViT, DINOv2)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    for source in (config, getattr(config, "vision_config", None)):
        if source is not None and getattr(source, "projection_dim", None):
            return int(source.projection_dim)
    vision = getattr(config, "vision_config", None) or config
    if getattr(vision, "hidden_size", None):
        return int(vision.hidden_size)
    raise ValueError(f"cannot tell the embedding size of {model} from its config; set --encoder.dim")
