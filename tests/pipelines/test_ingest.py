"""End-to-end ingestion on a real local Ray: good videos, every kind of bad input, duplicates,
HTTP sources, shards read back by plain webdataset and Ray Data, and an idempotent rerun."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from longvid.annotators.clips import ClipConfig
from longvid.annotators.fetch import FetchConfig
from longvid.annotators.segment import SegmentConfig
from longvid.pipelines.ingest import IngestConfig, RayConfig, ShardConfig, run_ingest
from longvid.shards import read_ledger, read_videos_index, read_clips_index, frame_indices
from longvid.shards.sampling import STAGES_BY_NAME
from longvid.shards.storage import LocalStorage
from longvid.synthetic import write_video
from tests.pipelines.helpers import BAD_SOURCES, make_bad_sources, write_manifest


def small_config(**shards) -> IngestConfig:
    return IngestConfig(
        fetch=FetchConfig(retries=1, backoff_s=0.05, timeout_s=5),
        segment=SegmentConfig(clips=ClipConfig(min_seconds=1.0, max_seconds=8.0)),
        shards=ShardConfig(**({"max_videos": 2} | shards)),
        ray=RayConfig(progress_bars=False),
        progress_s=1.0,
    )


@pytest.fixture(scope="module")
def ingested(ray_session, sample_videos, video_dir, http_server, tmp_path_factory):
    """One ingestion of a manifest mixing good, long, duplicated, HTTP and bad sources."""
    root = tmp_path_factory.mktemp("ingest")
    long_video = write_video(str(video_dir / "long.mp4"), [400, 300, 100], fps=25, width=96, height=64)
    write_video(str(video_dir / "served.mp4"), [50, 50], fps=25, width=80, height=48)  # only over HTTP
    copy = str(root / "copy-of-a.mp4")
    shutil.copy(sample_videos["a_h264"].path, copy)
    bad = make_bad_sources(str(root / "bad"), sample_videos["a_h264"].path)
    good = [v.path for v in sample_videos.values()] + [long_video.path]
    urls = good + [copy, f"{http_server}/served.mp4", f"{http_server}/nope.mp4", "http://127.0.0.1:9/x.mp4"]
    urls += [bad[name] for name in BAD_SOURCES]
    urls += [sample_videos["d_mpeg4"].path]  # the same URL twice
    manifest = write_manifest(str(root / "manifest.jsonl"), urls, {"lang": ["en"] * len(urls)})
    out = str(root / "dataset")
    summary = run_ingest(manifest, out, small_config())
    return {"summary": summary, "out": out, "urls": urls, "good": good, "copy": copy, "bad": bad,
            "manifest": manifest, "long": long_video, "http": http_server}


def test_summary_counts(ingested):
    s = ingested["summary"]
    # 5 local good + 1 HTTP good; copy and repeated URL are duplicates
    assert (s.sources, s.written, s.duplicates) == (len(ingested["urls"]), 6, 2)
    assert s.failed == len(BAD_SOURCES) + 2  # + HTTP 404 + unreachable host
    assert s.shards_written >= 3 and s.clips > 6  # max 2 videos a shard
    assert "failed" in s.format() and "video-seconds/s" in s.format()


def test_every_source_has_one_ledger_row_with_a_reason(ingested):
    storage = LocalStorage(ingested["out"])
    rows = read_ledger(storage).to_pylist()
    assert sorted(r["source_index"] for r in rows) == list(range(len(ingested["urls"])))
    by_url = {r["url"]: r for r in rows}
    for name, words in BAD_SOURCES.items():
        r = by_url[ingested["bad"][name]]
        assert r["status"] == "failed" and words in r["reason"], (name, r)
    assert "404" in by_url[f"{ingested['http']}/nope.mp4"]["reason"]
    unreachable = by_url["http://127.0.0.1:9/x.mp4"]
    assert unreachable["stage"] == "fetch" and "unreachable" in unreachable["reason"]
    assert by_url[ingested["bad"]["picture.mp4"]]["stage"] == "probe"


def test_same_content_stored_once_and_second_points_at_first(ingested):
    storage = LocalStorage(ingested["out"])
    rows = read_ledger(storage).to_pylist()
    first = next(r for r in rows if r["url"] == ingested["good"][0])
    copy = next(r for r in rows if r["url"] == ingested["copy"])
    assert copy["action"] == "duplicate" and copy["duplicate_of"] == first["video_id"]
    assert copy["status"] == "ok"
    index = read_videos_index(storage)
    assert index.num_rows == 6
    assert len(set(index["sha256"].to_pylist())) == 6
    repeated = [r for r in rows if r["url"] == ingested["good"][3]]
    assert sorted(r["action"] for r in repeated) == ["duplicate", "written"]


def test_shards_read_back_with_plain_webdataset(ingested):
    out = ingested["out"]
    shards = sorted(os.path.join(out, "videos", f) for f in os.listdir(os.path.join(out, "videos")))
    assert all(s.endswith(".tar") for s in shards)  # no partial files left behind
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    assert len(samples) == 6
    for shard in shards:
        assert 1 <= len(list(wds.WebDataset(shard, shardshuffle=False))) <= 2
    sources = {}
    for sample in samples:  # media members are uniform MP4 (write.media=mp4, the default)
        record = json.loads(sample["json"])
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"json", "mp4"}
        assert record["video"]["media_ext"] == "mp4"
        assert hashlib.sha256(sample["mp4"]).hexdigest() == record["video"]["media_sha256"]
        sources[record["video"]["source_uri"]] = record["video"]
        assert record["video"]["source_metadata"] == {"lang": "en"}
    for path in ingested["good"]:  # the content hash stays the source bytes' (dedup unchanged)
        assert sources[path]["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert sources[path]["source_ext"] == path.rsplit(".", 1)[-1]
    assert f"{ingested['http']}/served.mp4" in sources


def test_ray_data_reads_the_shards(ingested):
    import ray

    ds = ray.data.read_webdataset(os.path.join(ingested["out"], "videos"))
    assert ds.count() == 6


def test_index_offsets_and_plans(ingested):
    storage = LocalStorage(ingested["out"])
    videos = read_videos_index(storage).to_pylist()
    stage3 = STAGES_BY_NAME["stage3"]
    for v in videos:
        media = storage.read_range(v["shard"], v["media_offset"], v["media_size"])
        record = json.loads(storage.read_range(v["shard"], v["json_offset"], v["json_size"]))
        assert hashlib.sha256(media).hexdigest() == record["video"]["media_sha256"]
        plan = record["plan"]["stages"]["stage3"]
        assert plan["frames"] == frame_indices(v["num_frames"], v["fps"], stage3.lo, stage3.hi)
        assert v["stage3_frames"] == plan["num_frames"] and v["visual_tokens"] == 16 * plan["num_frames"]
        for clip in record["clips"]:
            span = clip["end_frame"] - clip["start_frame"]
            got = [f - clip["start_frame"] for f in clip["plan"]["stages"]["stage3"]["frames"]]
            assert got == frame_indices(span, v["fps"], stage3.lo, stage3.hi)


def test_long_video_clips_obey_limits(ingested):
    storage = LocalStorage(ingested["out"])
    clips = [c for c in read_clips_index(storage).to_pylist() if c["key"] in _key_of(storage, ingested["long"].path)]
    assert len(clips) >= 4
    assert clips[0]["start_frame"] == 0 and clips[-1]["end_frame"] == ingested["long"].num_frames
    assert all(1.0 - 1e-6 <= c["duration"] <= 8.0 + 1e-6 for c in clips)


def _key_of(storage, url):
    return {v["key"] for v in read_videos_index(storage).to_pylist() if v["url"] == url}


def test_dataset_json(ingested):
    meta = json.loads(open(os.path.join(ingested["out"], "dataset.json")).read())
    assert meta["schema_version"] == 1 and meta["counts"]["videos"] == 6
    assert meta["counts"]["shards"] == len(os.listdir(os.path.join(ingested["out"], "videos")))
    assert meta["hours"] > 0 and sum(meta["counts"]["video_buckets"].values()) == 6


def test_rerun_skips_committed_and_retries_failed(ingested):
    out = ingested["out"]
    before = {f: open(os.path.join(out, "videos", f), "rb").read() for f in os.listdir(os.path.join(out, "videos"))}
    summary = run_ingest(ingested["manifest"], out, small_config())
    # the six committed videos and the manifest's repeated URL are skipped; the copy is a duplicate again
    assert (summary.written, summary.skipped, summary.duplicates, summary.shards_written) == (0, 7, 1, 0)
    assert summary.failed == len(BAD_SOURCES) + 2
    after = {f: open(os.path.join(out, "videos", f), "rb").read() for f in os.listdir(os.path.join(out, "videos"))}
    assert after == before
    ledger = read_ledger(LocalStorage(out))
    assert len(set(ledger["run_id"].to_pylist())) == 2


def test_config_file_and_cli_errors(tmp_path, capsys):
    from longvid.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("shards:\n  max_videoz: 3\n")
    assert main(["ingest", "m.jsonl", "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "max_videoz" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    bad = tmp_path / "m.csv"
    bad.write_text("path\n/x.mp4\n")
    assert main(["ingest", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "no 'url' column" in capsys.readouterr().err
