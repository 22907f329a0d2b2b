"""Ingestion with the optional caption step: the caption layer kind (the same stages and
settings as ``longvid annotate --captioner``: a CPU frame-preparation stage feeding a captioner
actor) over the committed shards, on the ingest's Ray, with default resources (``num_gpus``
auto: this machine has none, so the model runs on CPU). The transformers backend with a tiny
random Idefics3 built in the test. Assert structure and counts, never words."""

from __future__ import annotations

import os

from longvid.annotators.captioners import CaptionerConfig, SamplingConfig
from longvid.pipelines.ingest import IngestCaptionConfig, build_stages, run_ingest
from longvid.pipelines.kinds import ModelPlacement, PipelineConfig, get_kind
from longvid.pipelines.annotate_stages import CaptionClips, PrepareClipFrames
from longvid.shards import read_clips_index, read_dataset_json, read_layer, read_layer_meta
from longvid.shards.layers import read_failures
from longvid.shards.storage import LocalStorage
from tests.annotators.tiny import cpu_model, tiny_models
from tests.pipelines.helpers import good_videos, write_manifest
from tests.pipelines.test_ingest import small_config


def test_ingest_with_caption_stage(ray_session, tmp_path, tmp_path_factory):
    models = tiny_models(tmp_path_factory)
    videos = good_videos(str(tmp_path / "src"), 3, seconds=5.0)
    manifest = write_manifest(str(tmp_path / "m.jsonl"), videos + [str(tmp_path / "missing.mp4")])
    config = small_config()
    config.caption = IngestCaptionConfig(
        enabled=True, layer="caption", version="ingest-v1", pipeline=PipelineConfig(num_cpus=0.5, batch_size=2),
        captioner=CaptionerConfig(model=cpu_model(models["vlm"], "transformers"), max_frames=4, longest_edge=64,
                                  sampling=SamplingConfig(max_new_tokens=12), on_overlong="keep"),
    )
    assert not any(s.name.startswith("caption") for s in build_stages(config, "x"))  # one wiring: the kind's
    out = str(tmp_path / "ds")
    summary = run_ingest(manifest, out, config)  # its caption step runs inside the ingest's own lease
    assert not os.path.exists(os.path.join(out, "_lease.json"))  # released at the end
    assert (summary.written, summary.failed) == (3, 1)
    storage = LocalStorage(out)
    layer = read_layer(storage, "caption", "ingest-v1").to_pylist()
    clips = read_clips_index(storage).to_pylist()
    failures = read_failures(storage, "caption", "ingest-v1")
    # every clip has a caption or a recorded failure; captions are keyed by real clip ids
    assert {r["clip_id"] for r in layer} <= {c["clip_id"] for c in clips}
    assert len(layer) == len(clips) and failures.num_rows == 0  # over-long random text is kept by on_overlong=keep
    assert summary.captions["status"] == "complete" and summary.captions["rows"] == len(clips)
    assert all(r["value_type"] == "text" and r["producer"] for r in layer)
    meta = read_layer_meta(storage, "caption", "ingest-v1")
    assert meta["kind"] == "caption" and meta["status"] == "complete"
    stages = get_kind("caption").stages(config.caption.captioner, storage, ModelPlacement(1, 0, 1, 2, True, 0.5))
    assert [type(s) for s in stages] == [PrepareClipFrames, CaptionClips]  # what both annotate and ingest run
    assert meta["producer"]["model"] == models["vlm"] and meta["producer"]["engine"]["name"] == "transformers"
    assert read_dataset_json(storage)["layers"] == {"caption": ["ingest-v1"]}
