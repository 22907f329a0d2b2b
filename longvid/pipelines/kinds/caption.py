"""The caption kind: a vision-language model captions every clip (``--captioner MODEL``).

Stages: ``prepare`` (CPU: one ranged read and one decode per video, one item per clip with its
frames as raw bytes) → ``caption`` (model actors); with ``pipeline.prepare_stage`` off, one model
stage decodes inline. The same stages serve ``ingest``'s optional caption step
(:func:`ingest_caption_stages`).
"""

from __future__ import annotations

from dataclasses import replace

from ...annotators.captioners import Captioner, CaptionerConfig
from ...shards.storage import Storage
from ..annotate_stages import CaptionClips, CaptionVideosInline, PrepareClipFrames
from . import LayerKind, ModelPlacement, register


@register
class CaptionKind(LayerKind):
    name = "caption"
    config_field = "captioner"
    config_type = CaptionerConfig
    model_flag = "--captioner"
    help = "clip captions from a vision-language model"
    item_level = "clip"
    stage_names = ("prepare", "caption")

    def model(self, settings: CaptionerConfig) -> str:
        return settings.model.model

    def backend(self, settings: CaptionerConfig) -> str:
        return settings.model.backend

    def with_backend(self, settings: CaptionerConfig, backend: str) -> CaptionerConfig:
        return replace(settings, model=replace(settings.model, backend=backend))

    def producer(self, settings: CaptionerConfig) -> dict:
        return Captioner(settings).producer()

    def stages(self, settings: CaptionerConfig, storage: Storage, placement: ModelPlacement) -> list:
        model = placement.model_stage()
        if not placement.prepare_stage:
            return [CaptionVideosInline(storage, settings, **model)]
        return [PrepareClipFrames(storage, settings, placement.prepare_cpus), CaptionClips(settings, **model)]
