"""Captioners: clips (frames prepared on the CPU) → one caption per clip with a producer record.

Backends: ``vllm`` (offline engine, one per GPU worker) and ``transformers`` (``generate``).
Exports the interface, the configs and the CPU preparation helpers; the stages are the caption
layer kind's (``pipelines/kinds/caption.py``).
"""

from .base import Caption, Captioner, CaptionerConfig, producer_id
from .engine import Engine, Generation, GenerationRequest, ModelConfig, SamplingConfig, make_engine, model_family
from .frames import ClipFrames, clip_frame_indices, decode_frames, prepare_clips
from .stage import caption_rows

__all__ = [
    "Caption", "Captioner", "CaptionerConfig", "ClipFrames", "Engine", "Generation",
    "GenerationRequest", "ModelConfig", "SamplingConfig", "caption_rows",
    "clip_frame_indices", "decode_frames", "make_engine", "model_family", "prepare_clips", "producer_id",
]
