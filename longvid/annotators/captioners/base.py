"""The captioner interface: a batch of clips, each given as frames already sampled and resized
on the CPU, becomes one caption per clip, plus the producer record that says exactly what made it
(model, prompt template hash, sampling parameters, engine name and version).

The captioner never decodes video and never knows about Ray; a clip that fails (engine error,
over-long output) comes back as a failed caption with a reason, and the batch goes on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from ..prompts import PromptTemplate, load_prompt
from .engine import (VIDEO_INPUT_FAMILIES, Engine, GenerationRequest, ModelConfig, SamplingConfig, make_engine,
                     model_family)
from .frames import ClipFrames

INPUT_MODES = ("auto", "images", "video")
# Families whose processors tile each image: frames are already sized on the CPU, so one tile each
NO_TILING = {"idefics3": {"do_image_splitting": False}, "smolvlm": {"do_image_splitting": False}}
OVERLONG_POLICIES = ("fail", "keep")


@dataclass
class CaptionerConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    prompt: str = "caption_clip.v1"  # a built-in template name or a template file; its sha256 is in the producer id
    input_mode: str = "auto"  # auto (by model family) | images (several images per prompt) | video (one video input)
    frame_source: str = "stage2"  # clip plan whose frames are shown (stage2: 4 frames under 8 s, else 8) | uniform
    max_frames: int = 8  # frames per clip at most: SmolVLM/Qwen-VL caption short clips well from 8
    longest_edge: int = 384  # resize on the CPU so the longer side is at most this (SmolVLM tiles are 384 px)
    hwaccel: str = "auto"  # frame decoding: auto (NVDEC where a GPU is present, else CPU) | none | cuda; see annotators.decode
    on_overlong: str = "fail"  # a caption cut off at max_new_tokens: fail (to the ledger) | keep (stored as is)


def check_captioner_config(config: CaptionerConfig) -> None:
    if config.input_mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {config.input_mode!r}")
    if config.on_overlong not in OVERLONG_POLICIES:
        raise ValueError(f"on_overlong must be one of {OVERLONG_POLICIES}, got {config.on_overlong!r}")
    if config.max_frames < 1 or config.longest_edge < 16:
        raise ValueError("max_frames must be >= 1 and longest_edge >= 16")


@dataclass
class Caption:
    """The outcome for one clip: ``text`` when ok, ``error`` (a reason for the ledger) when not."""

    key: str
    clip_id: str
    start: float
    end: float
    text: str | None
    num_tokens: int
    finish_reason: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def producer_id(producer: dict) -> str:
    """A short stable id of a producer record (what the layer rows carry)."""
    canonical = json.dumps(producer, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Captioner:
    """Load once per worker (:meth:`setup`), then :meth:`caption` batches of clips."""

    name = "caption"
    version = "1"  # of this code's request layout; part of the producer record

    def __init__(self, config: CaptionerConfig, engine: Engine | None = None):
        """``engine``: an already built engine of the same model to share (benchmarks, tests)."""
        check_captioner_config(config)
        if engine is not None and engine.config.model != config.model.model:
            raise ValueError(f"shared engine runs {engine.config.model!r}, not {config.model.model!r}")
        self.config = config
        self.prompt: PromptTemplate = load_prompt(config.prompt)
        self.engine: Engine | None = engine
        self._mode: str | None = None

    @property
    def input_mode(self) -> str:
        if self._mode is None:
            mode = self.config.input_mode
            if mode == "auto":
                family = model_family(self.config.model.model, self.config.model.trust_remote_code)
                mode = "video" if family in VIDEO_INPUT_FAMILIES else "images"
            self._mode = mode
        return self._mode

    def model_config(self) -> ModelConfig:
        """The model settings, with this family's processor defaults under the user's own."""
        model = self.config.model
        family = model_family(model.model, model.trust_remote_code)
        return replace(model, processor_kwargs={**NO_TILING.get(family, {}), **model.processor_kwargs})

    def _engine(self) -> Engine:
        if self.engine is None:  # built here, loaded only in setup()
            limits = {"video": 1} if self.input_mode == "video" else {"image": self.config.max_frames}
            self.engine = make_engine(self.model_config(), mm_limits=limits)
        return self.engine

    def setup(self) -> None:
        """Load the model (once per worker)."""
        self._engine().load()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def producer(self) -> dict:
        """Everything that decides the captions' text, and nothing that does not (no device, no paths
        of temporary files beyond the model's own name). Needs no model load: the driver calls it."""
        c = self.config
        return {
            "kind": "captioner",
            "captioner_version": self.version,
            "model": c.model.model,
            "prompt": self.prompt.identity(),
            "sampling": {**asdict(c.sampling), "seed": c.model.seed},
            "engine": self._engine().info(),
            "input": {"mode": self.input_mode, "frame_source": c.frame_source, "max_frames": c.max_frames,
                      "longest_edge": c.longest_edge, "processor_kwargs": self._engine().config.processor_kwargs},
        }

    def request(self, clip: ClipFrames) -> GenerationRequest:
        text = self.prompt.render(
            num_frames=len(clip.frames),
            duration=f"{clip.end - clip.start:.1f}",
            start=f"{clip.start:.1f}",
            end=f"{clip.end:.1f}",
        )
        if self.input_mode == "video":
            content = [{"type": "video"}, {"type": "text", "text": text}]
            return GenerationRequest([{"role": "user", "content": content}], video=clip.frames)
        content = [{"type": "image"} for _ in range(len(clip.frames))] + [{"type": "text", "text": text}]
        return GenerationRequest([{"role": "user", "content": content}], images=list(clip.frames))

    def caption(self, clips: list[ClipFrames]) -> list[Caption]:
        """One caption per clip, in order; failures are returned, not raised."""
        self.setup()
        generations = self.engine.generate([self.request(c) for c in clips], self.config.sampling)
        out = []
        for clip, gen in zip(clips, generations):
            error = gen.error
            if error is None and gen.finish_reason == "length" and self.config.on_overlong == "fail":
                error = f"over-long output: hit max_new_tokens={self.config.sampling.max_new_tokens}"
            if error is None and not gen.text.strip():
                error = "empty caption"
            out.append(Caption(clip.key, clip.clip_id, clip.start, clip.end,
                               gen.text.strip() if error is None else None, gen.num_tokens, gen.finish_reason, error))
        return out
