"""The writer kind: a text model writes segment and video summaries and checked QA from a
caption layer (``--writer MODEL --source-layer caption/v1``), optionally reading a speech layer
beside it (``--speech-layer speech/v1``): each speech segment is put, by time, into the line of
the clip it falls in, so segment prompts and the timeline carry what was said where.

No video bytes are read: items carry their timeline as JSON (``plan_inputs``).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from ...annotators.writers import VideoWriter, WriterConfig
from ...shards.layers import read_layer_rows, split_layer_ref
from ...shards.storage import Storage
from ..annotate_stages import WriteSummaries
from . import LayerKind, ModelPlacement, register

SPEECH_PREFIX = "Speech:"  # how a clip's line shows what is said during it


def merge_speech(clips: list[list], speech: list[list]) -> list[list]:
    """Clip lines ``[clip_id, start, end, caption]`` with each speech segment ``[start, end, text]``
    appended (quoted) to the clip holding its midpoint; speech outside every clip is left out."""
    if not speech:
        return clips
    clips = sorted(clips, key=lambda c: (c[1], c[2]))
    said: dict[int, list[str]] = {}
    for start, end, text in sorted(speech):
        mid = (start + end) / 2.0
        for i, (_, c_start, c_end, _) in enumerate(clips):
            if c_start <= mid < c_end or (i == len(clips) - 1 and c_start <= mid <= c_end):
                said.setdefault(i, []).append(text)
                break
    return [[c[0], c[1], c[2], c[3] + (f' {SPEECH_PREFIX} "{" ".join(said[i])}"' if i in said else "")]
            for i, c in enumerate(clips)]


def split_layer(flag: str, value: str) -> tuple[str, str]:
    return split_layer_ref(value, flag)


def _by_key(table: pa.Table, columns: list[str]) -> dict[str, list[list]]:
    out: dict[str, list[list]] = {}
    for row in table.select(["key"] + columns).to_pylist():  # bounded: the videos of this run's parts
        out.setdefault(row["key"], []).append([row[c] for c in columns])
    return out


@register
class WriterKind(LayerKind):
    name = "writer"
    config_field = "writer"
    config_type = WriterConfig
    model_flag = "--writer"
    help = "segment and video summaries and checked QA from a caption layer (and a speech layer)"
    item_level = "video"
    stage_names = ("write",)

    def model(self, settings: WriterConfig) -> str:
        return settings.model.model

    def backend(self, settings: WriterConfig) -> str:
        return settings.model.backend

    def with_backend(self, settings: WriterConfig, backend: str) -> WriterConfig:
        return replace(settings, model=replace(settings.model, backend=backend))

    def check(self, config) -> None:
        if not config.source_layer:
            raise ValueError("--writer needs --source-layer LAYER/VERSION (the clip captions to read)")
        split_layer("--source-layer", config.source_layer)
        if config.speech_layer:
            split_layer("--speech-layer", config.speech_layer)

    def recipe(self, config) -> dict:
        return {"source_layer": config.source_layer, "speech_layer": config.speech_layer}

    def producer(self, settings: WriterConfig) -> dict:
        return VideoWriter(settings).producer()  # the source layers are in the recipe

    def plan_inputs(self, storage: Storage, config, videos: list[dict]) -> list[dict]:
        """Each video with ``timeline``: its clip captions (and speech, by time) as JSON."""
        keys = [v["key"] for v in videos]
        captions = read_layer_rows(storage, *split_layer("--source-layer", config.source_layer), keys)
        captions = captions.filter(pc.is_valid(captions["clip_id"]))
        by_key = _by_key(captions, ["clip_id", "start", "end", "value"])
        speech: dict[str, list[list]] = {}
        if config.speech_layer:
            rows = read_layer_rows(storage, *split_layer("--speech-layer", config.speech_layer), keys)
            texts = [json.loads(v).get("text", "") if t == "json" else v
                     for v, t in zip(rows["value"].to_pylist(), rows["value_type"].to_pylist())]
            rows = rows.select(["key", "start", "end"]).append_column("text", pa.array(texts, pa.string()))
            speech = _by_key(rows, ["start", "end", "text"])
        return [dict(v, timeline=json.dumps(merge_speech(by_key.get(v["key"], []), speech.get(v["key"], []))))
                for v in videos]

    def stages(self, settings: WriterConfig, storage: Storage, placement: ModelPlacement) -> list:
        return [WriteSummaries(settings, **placement.model_stage())]
