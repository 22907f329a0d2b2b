"""The speech layer kind: a video's audio track → time-stamped transcript segments, through
transformers' Whisper pipeline (narrated sources carry most of their content in speech).

Audio is decoded with PyAV from the media bytes and resampled to 16 kHz mono float32; segments
are clipped to the video's duration (a model may stamp past the end). Never knows about Ray.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass

import numpy as np

from .base import ItemFailed
from .captioners.base import producer_id

SAMPLE_RATE = 16000  # Whisper's feature extractor expects 16 kHz


@dataclass
class SpeechConfig:
    model: str = ""  # hub id or local path of a Whisper checkpoint (e.g. openai/whisper-large-v3-turbo)
    device: str = "auto"  # auto (cuda if present, else cpu) | cpu | cuda | cuda:N
    chunk_length_s: float = 30.0  # Whisper's window; longer audio is cut into windows that overlap a little
    batch_size: int = 8  # windows per forward pass
    max_new_tokens: int = 128  # per 30-s window: speech rarely exceeds ~100 tokens in 30 s
    language: str = "en"  # forced language token ("" lets Whisper detect it)
    min_seconds: float = 0.05  # drop stamped segments shorter than this (empty or degenerate)


def decode_audio(media: bytes, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream as mono float32 at ``rate``; ItemFailed when there is none."""
    import av

    try:
        container = av.open(io.BytesIO(media))
    except av.error.FFmpegError as exc:
        raise ItemFailed(f"cannot open media: {exc}") from None
    with container:
        if not container.streams.audio:
            raise ItemFailed("the video has no audio track")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        try:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            raise ItemFailed(f"audio decode failed: {exc}") from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


class SpeechTranscriber:
    """Load once per worker (:meth:`setup`), then :meth:`transcribe` one video's audio at a time."""

    name = "speech"
    version = "1"

    def __init__(self, config: SpeechConfig):
        if not config.model:
            raise ValueError("no speech model given: set the Whisper checkpoint's hub id or local path")
        self.config = config
        self.asr = None

    def setup(self) -> None:
        if self.asr is not None:
            return
        import torch
        from transformers import pipeline

        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.asr = pipeline("automatic-speech-recognition", model=self.config.model, device=device)

    def producer(self) -> dict:
        import transformers

        return {"kind": "speech", "speech_version": self.version, "model": self.config.model,
                "engine": {"name": "transformers", "version": transformers.__version__},
                "settings": {k: v for k, v in asdict(self.config).items() if k not in ("model", "device")}}

    def transcribe(self, audio: np.ndarray, duration: float) -> list[dict]:
        """Segments ``{"start", "end", "text"}`` in time order, inside ``[0, duration]``."""
        self.setup()
        if audio.size == 0:
            return []
        c = self.config
        generate = {"max_new_tokens": c.max_new_tokens, "task": "transcribe"}
        if c.language:
            generate["language"] = c.language
        out = self.asr({"raw": audio, "sampling_rate": SAMPLE_RATE}, return_timestamps=True,
                       chunk_length_s=c.chunk_length_s, batch_size=c.batch_size, generate_kwargs=generate)
        segments = []
        for chunk in out.get("chunks", []):
            start, end = chunk.get("timestamp") or (None, None)
            text = " ".join(str(chunk.get("text", "")).split())
            if start is None or not text:
                continue
            start = max(0.0, min(float(start), duration))
            end = min(float(end) if end is not None else duration, duration)
            if end - start >= c.min_seconds:
                segments.append({"start": round(start, 3), "end": round(end, 3), "text": text})
        return sorted(segments, key=lambda s: (s["start"], s["end"]))


def speech_rows(key: str, segments: list[dict], producer: dict) -> list[dict]:
    """Layer rows: one per segment, video-level (no clip), its span in start/end."""
    pid = producer_id(producer)
    return [{"key": key, "clip_id": None, "start": s["start"], "end": s["end"], "value_type": "json",
             "producer": pid, "value": json.dumps({"task": "speech", "scope": "segment", "text": s["text"]})}
            for s in segments]
