"""The speech kind: Whisper (transformers) transcribes each video's audio into time-stamped
segments inside the video's span (``--kind speech --speech.model MODEL``).

Stages: ``prepare_audio`` (CPU: one ranged read, the first audio stream decoded and resampled to
16 kHz mono float32, passed on as raw bytes) → ``speech`` (model actors, one Whisper pipeline
each). With ``pipeline.prepare_stage`` off the model stage decodes itself. A video without audio
is a failure row (``the video has no audio track``), not an error.
"""

from __future__ import annotations

import json

import numpy as np

from ...annotators.base import ItemFailed, ModelStage, Resources, Stage
from ...annotators.speech import SpeechConfig, SpeechTranscriber, decode_audio, speech_rows
from ...shards.storage import Storage
from . import LayerKind, ModelPlacement, register


def _result(video: dict, rows: list[dict], failures: list[dict]) -> dict:
    result = {"expected": 1, "rows": rows, "failures": failures, "num_tokens": 0}
    return {"part": video["part"], "key": video["key"], "result": json.dumps(result)}


class PrepareAudio(Stage):
    """CPU: a video row → the same item with its audio (16 kHz mono float32) as ``media``."""

    name = "prepare_audio"
    version = "1"

    def __init__(self, storage: Storage, num_cpus: float):
        self.storage = storage
        self.resources = Resources(num_cpus=num_cpus)

    def process(self, video: dict) -> dict:
        try:
            media = self.storage.read_range(video["shard"], video["media_offset"], video["media_size"])
        except OSError as exc:
            raise ItemFailed(f"cannot read the video's bytes: {type(exc).__name__}: {exc}") from None
        return dict(video, media=decode_audio(media).tobytes())


class Transcribe(ModelStage):
    """Model: audio items in, one result item (the video's speech rows) per video."""

    name = "speech"
    version = SpeechTranscriber.version

    def __init__(self, config: SpeechConfig, storage: Storage | None, **model):
        super().__init__(config, **model)
        self.storage = storage  # decode inline (no preparation stage)

    def setup(self) -> None:
        self.transcriber = SpeechTranscriber(self.config)
        self.transcriber.setup()
        self.producer_record = self.transcriber.producer()

    def process(self, video: dict) -> dict:
        try:
            if self.storage is not None:
                video = PrepareAudio(self.storage, 0).process(video)
            audio = np.frombuffer(video["media"], dtype=np.float32)
            segments = self.transcriber.transcribe(audio, float(video["duration"]))
        except ItemFailed as exc:
            return _result(video, [], [{"stage": "speech", "clip_id": None, "reason": exc.reason}])
        except Exception as exc:  # noqa: BLE001 - the model broke on this video: it fails, the run goes on
            return _result(video, [], [{"stage": "speech", "clip_id": None,
                                        "reason": f"engine error: {type(exc).__name__}: {exc}"}])
        if not segments:
            return _result(video, [], [{"stage": "speech", "clip_id": None, "reason": "no speech found"}])
        return _result(video, speech_rows(video["key"], segments, self.producer_record), [])


@register
class SpeechKind(LayerKind):
    name = "speech"
    config_field = "speech"
    config_type = SpeechConfig
    help = "time-stamped speech transcripts of each video's audio (Whisper through transformers)"
    item_level = "video"
    stage_names = ("prepare_audio", "speech")

    def model(self, settings: SpeechConfig) -> str:
        return settings.model

    def producer(self, settings: SpeechConfig) -> dict:
        return SpeechTranscriber(settings).producer()

    def stages(self, settings: SpeechConfig, storage: Storage, placement: ModelPlacement) -> list:
        model = placement.model_stage()
        if not placement.prepare_stage:
            return [Transcribe(settings, storage, **model)]
        return [PrepareAudio(storage, placement.prepare_cpus), Transcribe(settings, None, **model)]
