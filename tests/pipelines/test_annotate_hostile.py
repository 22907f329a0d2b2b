"""`longvid annotate` over a dataset with one hostile index row (its media size claims 10^12 bytes,
which read into memory ended in ``MemoryError``): that video is a ledger failure naming the row,
every other clip is captioned. Tiny random models on a real local Ray."""

from __future__ import annotations

from longvid.annotators.clips import ClipConfig
from longvid.pipelines.annotate import run_annotate
from longvid.shards.index import read_index_parts
from longvid.shards.layers import read_layer
from longvid.shards.ledger import read_ledger
from longvid.shards.storage import LocalStorage
from longvid.synthetic import write_known_cut_dataset, write_video
from tests.annotators.tiny import tiny_models
from tests.pipelines.test_annotate import caption_config
from tests.shards.hostile_index import set_value


def test_a_hostile_video_row_fails_alone_and_the_good_clips_are_captioned(ray_session, tmp_path, tmp_path_factory):
    videos = []
    for i in range(3):
        truth = write_video(str(tmp_path / f"v{i}.mp4"), [30 + i, 35], fps=25, width=64, height=48)
        videos.append((truth.path, truth.cuts))
    root = str(tmp_path / "ds")
    write_known_cut_dataset(root, videos, per_shard=3, clips=ClipConfig(0.5, 4.0))
    storage = LocalStorage(root)
    index_videos, clips = read_index_parts(storage)
    victim = index_videos.to_pylist()[1]
    set_value(root, victim["shard"], "videos", "key", victim["key"], "media_size", 10 ** 12)
    good = sorted(c["clip_id"] for c in clips.to_pylist() if c["key"] != victim["key"])
    assert len(good) >= 4

    config = caption_config(tiny_models(tmp_path_factory), "vllm", "v1", prepare_stage=True, videos_per_part=3)
    summary = run_annotate(root, config, log=lambda *_: None)
    assert sorted(read_layer(storage, "caption", "v1")["clip_id"].to_pylist()) == good
    rows = read_ledger(storage, "annotations/caption/v1/ledger").to_pylist()
    bad = [r for r in rows if r["video_id"] == victim["key"]]
    assert len(bad) == 1 and bad[0]["status"] == "failed" and bad[0]["stage"] == "index"
    assert bad[0]["reason"].startswith("bad_index_row: media_outside_shard")
    assert summary["failed_videos"] == 1 and summary["videos"] == 3
