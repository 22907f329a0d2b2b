"""Ingestion with the optional caption stage: a CPU frame-preparation stage feeding a captioner
actor (the transformers backend with a tiny random Idefics3 model built in the test; a GPU would
be used the same way with num_gpus=1). Assert structure and counts, never words."""

from __future__ import annotations

from longvid.annotators.captioners import CaptionerConfig, SamplingConfig
from longvid.pipelines.ingest import IngestCaptionConfig, run_ingest
from longvid.shards import read_clips_index, read_dataset_json, read_layer, read_layer_meta
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
        enabled=True, layer="caption", version="ingest-v1", num_gpus=0.0, num_cpus=0.5, batch_size=2,
        captioner=CaptionerConfig(model=cpu_model(models["vlm"], "transformers"), max_frames=4, longest_edge=64,
                                  sampling=SamplingConfig(max_new_tokens=12), on_overlong="keep"),
    )
    out = str(tmp_path / "ds")
    summary = run_ingest(manifest, out, config)
    assert (summary.written, summary.failed) == (3, 1)
    storage = LocalStorage(out)
    layer = read_layer(storage, "caption", "ingest-v1").to_pylist()
    clips = read_clips_index(storage).to_pylist()
    failures = storage.list("annotations/caption/ingest-v1/ledger")
    # every clip has a caption or a recorded failure; captions are keyed by real clip ids
    assert {r["clip_id"] for r in layer} <= {c["clip_id"] for c in clips}
    assert len(layer) == len(clips) and not failures  # over-long random text is kept by on_overlong=keep
    assert all(r["value_type"] == "text" and r["producer"] for r in layer)
    meta = read_layer_meta(storage, "caption", "ingest-v1")
    assert meta["producer"]["model"] == models["vlm"] and meta["producer"]["engine"]["name"] == "transformers"
    assert read_dataset_json(storage)["layers"] == {"caption": ["ingest-v1"]}
