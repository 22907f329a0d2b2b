"""``longvid export llava`` and ``longvid stats`` on a small ingested dataset with hand-written
layers: records per bucket, conversations from the layers, the data YAML, extracted media and the
statistics all checked against the index."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from longvid.annotators.clips import ClipConfig
from longvid.cli import main
from longvid.pipelines.ingest import IngestConfig, RayConfig, ShardConfig, run_ingest
from longvid.pipelines.manifest import write_manifest
from longvid.shards import read_clips_index, read_videos_index, time_prompt
from longvid.shards.layers import write_layer_meta, write_layer_part
from longvid.shards.storage import LocalStorage
from longvid.annotators.segment import SegmentConfig
from longvid.synthetic import write_video

FPS = 10
SECONDS = {"short": 4, "mid": 8, "long": 32}  # short and mid in 0-30s, long in 30-60s


def caption_of(clip_id: str) -> str:
    return f"caption of {clip_id}"


@pytest.fixture(scope="module")
def dataset(ray_session, tmp_path_factory):
    """3 ingested videos; caption/v1 captions every clip but mid's and long's last; writer/v1 has
    a summary and a counting QA for short only. So mid has no turns at all."""
    root = tmp_path_factory.mktemp("export")
    sources = {}
    for i, (name, seconds) in enumerate(SECONDS.items()):
        frames = seconds * FPS
        shots = [frames // 2 + i, frames - frames // 2 - i]
        sources[name] = write_video(str(root / f"{name}.mp4"), shots, fps=FPS, width=64, height=48).path
    config = IngestConfig(segment=SegmentConfig(clips=ClipConfig(min_seconds=1.0, max_seconds=8.0)),
                          shards=ShardConfig(max_videos=2), ray=RayConfig(progress_bars=False))
    out = str(root / "dataset")
    summary = run_ingest(write_manifest(str(root / "manifest.jsonl"), list(sources.values())), out, config)
    assert summary.written == 3
    storage = LocalStorage(out)
    videos = {v["url"]: v for v in read_videos_index(storage).to_pylist()}
    key = {name: videos[path]["key"] for name, path in sources.items()}
    clips = read_clips_index(storage).to_pylist()
    long_clips = sorted((c for c in clips if c["key"] == key["long"]), key=lambda c: c["start"])
    uncaptioned = {c["clip_id"] for c in clips if c["key"] == key["mid"]} | {long_clips[-1]["clip_id"]}
    caption_rows = [{"key": c["key"], "clip_id": c["clip_id"], "start": c["start"], "end": c["end"],
                     "value": caption_of(c["clip_id"]), "value_type": "text", "producer": "p-cap"}
                    for c in clips if c["clip_id"] not in uncaptioned]
    write_layer_part(storage, "caption", "v1", "part-0", caption_rows)
    write_layer_meta(storage, "caption", "v1", {"producer": {"model": "test/captioner"}, "status": "complete"})
    short = videos[sources["short"]]
    writer_rows = [
        {"key": key["short"], "clip_id": None, "start": 0.0, "end": short["duration"], "value_type": "json",
         "producer": "p-wr", "value": json.dumps({"task": "summary", "text": "A short test video."})},
        {"key": key["short"], "clip_id": None, "start": 0.0, "end": short["duration"], "value_type": "json",
         "producer": "p-wr", "value": json.dumps({"task": "event_counting", "question": "How many scenes?",
                                                  "answer": 2})},
    ]
    write_layer_part(storage, "writer", "v1", "part-0", writer_rows)
    write_layer_meta(storage, "writer", "v1", {"producer": "test-writer"})
    return {"root": root, "out": out, "sources": sources, "key": key, "videos": videos, "clips": clips,
            "uncaptioned": uncaptioned}


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def exported(dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("llava"))
    rc = main(["export", "llava", dataset["out"], "--out", out, "--layer", "caption/v1", "--layer", "writer/v1",
               "--extract-media"])
    assert rc == 0
    return out


def test_one_jsonl_per_bucket_with_the_right_record_counts(dataset, exported):
    videos = list(dataset["videos"].values())
    expected = {}
    for v in videos:
        if v["key"] != dataset["key"]["mid"]:  # mid has no turns
            name = f"llava_video_{v['bucket']}.jsonl"
            expected[name] = expected.get(name, 0) + 1
    for c in dataset["clips"]:
        if c["clip_id"] not in dataset["uncaptioned"]:
            name = f"llava_clip_{c['bucket']}.jsonl"
            expected[name] = expected.get(name, 0) + 1
    assert {"llava_video_0-30s.jsonl", "llava_video_30-60s.jsonl"} <= set(expected)  # two buckets appear
    got = {name: len(read_jsonl(os.path.join(exported, name)))
           for name in os.listdir(exported) if name.endswith(".jsonl")}
    assert got == expected
    assert not [n for n in os.listdir(exported) if n.endswith(".tmp")]


def test_conversations_open_with_one_image_and_carry_layer_text(dataset, exported):
    videos = {v["key"]: v for v in dataset["videos"].values()}
    clips = {c["clip_id"]: c for c in dataset["clips"]}
    records = [r for n in os.listdir(exported) if n.endswith(".jsonl") for r in read_jsonl(os.path.join(exported, n))]
    by_id = {r["id"]: r for r in records}
    short = by_id[dataset["key"]["short"]]
    v = videos[short["id"]]
    assert short["conversations"][0]["from"] == "human"
    # the time prompt is left to the trainer (its --time_msg short) by default
    assert short["conversations"][0]["value"] == "<image>\nSummarize the video."
    assert [t["value"] for t in short["conversations"][1::2]] == ["A short test video.", "2"]
    assert short["conversations"][2]["value"] == "How many scenes?"
    long = by_id[dataset["key"]["long"]]  # no writer rows: dense, time-stamped captions
    assert caption_of(sorted(c for c in clips if c.startswith(long["id"]))[0]) in long["conversations"][1]["value"]
    assert dataset["key"]["mid"] not in by_id
    clip_records = [r for r in records if r["id"] in clips]
    assert clip_records and not [r for r in records if "start" in r or "end" in r]  # the peer's Ceph-only path
    for r in clip_records:
        c = clips[r["id"]]
        assert r["conversations"][0]["value"] == "<image>\nDescribe this video."
        assert r["conversations"][1]["value"] == caption_of(r["id"])
        assert r["duration"] == pytest.approx(c["duration"])
        assert r["video"] == f"clips/{c['clip_id']}.mp4"


def test_data_yaml_lists_every_jsonl(exported):
    with open(os.path.join(exported, "llava_data.yaml")) as f:
        data = yaml.safe_load(f)
    files = sorted(os.path.join(exported, n) for n in os.listdir(exported) if n.endswith(".jsonl"))
    assert sorted(e["json_path"] for e in data["datasets"]) == files
    for entry in data["datasets"]:
        assert entry["sampling_strategy"] == "all"
        assert entry["data_root"] == exported
        assert entry["video_read_type"] == "decord"


def frames_of(path: str) -> list:
    import av

    with av.open(path) as container:
        return [f.to_ndarray(format="gray") for f in container.decode(video=0)]


def test_media_written_by_default_whole_videos_and_exact_clip_files(dataset, exported):
    import numpy as np

    storage = LocalStorage(dataset["out"])
    names = sorted(os.listdir(os.path.join(exported, "videos")))
    wanted = {dataset["key"]["short"], dataset["key"]["long"]}  # mid is in no video record
    assert names == sorted(f"{k}.mp4" for k in wanted)
    videos = {v["key"]: v for v in dataset["videos"].values()}
    for key in wanted:
        v = videos[key]
        member = storage.read_range(v["shard"], v["media_offset"], v["media_size"])
        assert open(os.path.join(exported, "videos", f"{key}.mp4"), "rb").read() == member
    captioned = [c for c in dataset["clips"] if c["clip_id"] not in dataset["uncaptioned"]]
    assert sorted(os.listdir(os.path.join(exported, "clips"))) == sorted(f"{c['clip_id']}.mp4" for c in captioned)
    for c in captioned:  # exactly the clip's frames, in order
        parent = frames_of(dataset["sources"][next(n for n, k in dataset["key"].items() if k == c["key"])])
        clip = frames_of(os.path.join(exported, "clips", f"{c['clip_id']}.mp4"))
        assert len(clip) == c["end_frame"] - c["start_frame"]
        diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(clip, parent[c["start_frame"]:])]
        assert max(diffs) < 6


def test_clip_unit_with_data_root_of_an_earlier_export(dataset, exported, tmp_path, capsys):
    (tmp_path / "llava_video_0-30s.jsonl").write_text("{}\n")  # left by an earlier export
    rc = main(["export", "llava", dataset["out"], "--out", str(tmp_path), "--unit", "clip",
               "--layer", "caption/v1", "--data-root", exported, "--video-read-type", "av"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"skipped {len(dataset['uncaptioned'])} clip record(s)" in printed
    assert "llava_video_0-30s.jsonl is from an earlier export" in printed
    assert not os.path.exists(tmp_path / "videos") and not os.path.exists(tmp_path / "clips")
    data = yaml.safe_load((tmp_path / "llava_data.yaml").read_text())
    assert data["datasets"] and all("/llava_clip_" in e["json_path"] for e in data["datasets"])
    assert {(e["data_root"], e["video_read_type"]) for e in data["datasets"]} == {(exported, "av")}


def test_a_data_root_without_the_media_is_refused_and_no_yaml_written(dataset, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    rc = main(["export", "llava", dataset["out"], "--out", str(out), "--layer", "caption/v1",
               "--data-root", str(empty)])
    err = capsys.readouterr().err
    assert rc == 2 and "not under --data-root" in err and "Traceback" not in err
    assert not os.path.exists(out / "llava_data.yaml") and not [n for n in os.listdir(out) if n.endswith(".jsonl")]
    assert main(["export", "llava", dataset["out"], "--out", str(out), "--data-root", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("layer, words", [("nope/v1", "no annotation layer nope/v1"),
                                          ("caption", "LAYER/VERSION")])
def test_a_bad_layer_ref_exits_2_with_a_clear_message(dataset, tmp_path, capsys, layer, words):
    rc = main(["export", "llava", dataset["out"], "--out", str(tmp_path), "--layer", layer])
    err = capsys.readouterr().err
    assert rc == 2
    assert words in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "llava_data.yaml")


def test_stats_json_matches_the_index_and_lists_the_layers(dataset, tmp_path, capsys):
    html_path = tmp_path / "report.html"
    assert main(["stats", dataset["out"], "--json", "--html", str(html_path)]) == 0
    stats = json.loads(capsys.readouterr().out)
    videos, clips = list(dataset["videos"].values()), dataset["clips"]
    assert stats["counts"] == {"videos": 3, "clips": len(clips), "shards": len({v["shard"] for v in videos})}
    assert stats["hours"] == pytest.approx(sum(v["duration"] for v in videos) / 3600)
    buckets = {b["bucket"]: b for b in stats["buckets"]}
    for label in {v["bucket"] for v in videos} | {c["bucket"] for c in clips}:
        assert buckets[label]["videos"] == sum(v["bucket"] == label for v in videos)
        assert buckets[label]["clips"] == sum(c["bucket"] == label for c in clips)
        assert buckets[label]["video_hours"] == pytest.approx(
            sum(v["duration"] for v in videos if v["bucket"] == label) / 3600)
    layers = {(x["layer"], x["version"]): x for x in stats["layers"]}
    assert set(layers) == {("caption", "v1"), ("writer", "v1")}
    assert layers[("caption", "v1")]["clip_rows"] == len(clips) - len(dataset["uncaptioned"])
    assert layers[("writer", "v1")]["video_rows"] == 2
    assert layers[("caption", "v1")]["producer"] == {"model": "test/captioner"}
    page = html_path.read_text()
    assert "<svg" in page and "caption" in page and "test/captioner" in page


def test_stats_text_and_default_report_path(dataset, capsys):
    assert main(["stats", dataset["out"]]) == 0
    printed = capsys.readouterr().out
    assert "3 videos" in printed and "writer/v1" in printed
    assert os.path.exists(os.path.join(dataset["out"], "report.html"))


def test_stats_of_a_folder_that_is_not_a_dataset_exits_2(tmp_path, capsys):
    assert main(["stats", str(tmp_path), "--no-html"]) == 2
    assert "not a LongVid dataset" in capsys.readouterr().err


@pytest.mark.parametrize("answer", [{"start": 1.0}, {"start": "soon", "end": 2.0}, {"start": None, "end": 1}])
def test_a_malformed_grounding_answer_is_no_turn_rather_than_a_crash(answer):
    from longvid.shards.conversation import item_turn

    assert item_turn({"task": "temporal_grounding", "question": "When?", "answer": answer}) is None
    good = {"task": "temporal_grounding", "question": "When?", "answer": {"start": 1, "end": 2.5}}
    assert item_turn(good) == ("When?", "From 1.0s to 2.5s.")


def test_export_and_stats_read_a_dataset_on_s3(dataset, s3_bucket, tmp_path, monkeypatch, capsys):
    import boto3

    client = boto3.client("s3")
    for folder, _, files in os.walk(dataset["out"]):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), dataset["out"])
            client.upload_file(os.path.join(folder, name), s3_bucket, f"corpus/{rel}")
    out = tmp_path / "llava"
    rc = main(["export", "llava", f"s3://{s3_bucket}/corpus", "--out", str(out), "--unit", "video",
               "--layer", "caption/v1"])
    assert rc == 0
    long_key = dataset["key"]["long"]
    v = next(v for v in dataset["videos"].values() if v["key"] == long_key)
    member = LocalStorage(dataset["out"]).read_range(v["shard"], v["media_offset"], v["media_size"])
    assert (out / "videos" / f"{long_key}.mp4").read_bytes() == member
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["stats", f"s3://{s3_bucket}/corpus", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["counts"]["videos"] == 3 and stats["report"] == str(tmp_path / "corpus-report.html")
    assert "<svg" in (tmp_path / "corpus-report.html").read_text()


def test_without_layer_flags_every_single_version_layer_is_used_and_two_versions_must_be_chosen(
        dataset, tmp_path, capsys):
    import shutil

    assert main(["export", "llava", dataset["out"], "--out", str(tmp_path / "all"), "--unit", "video"]) == 0
    assert "layers: caption/v1, writer/v1" in capsys.readouterr().out
    copy = str(tmp_path / "dataset")
    shutil.copytree(dataset["out"], copy)
    write_layer_part(LocalStorage(copy), "caption", "v2", "part-0", [])
    assert main(["export", "llava", copy, "--out", str(tmp_path / "two")]) == 2
    assert "choose with --layer caption/VERSION" in capsys.readouterr().err


def test_hostile_index_rows_are_skipped_counted_and_named_not_fatal(dataset, exported, tmp_path, capsys, caplog):
    import shutil

    from tests.shards.hostile_index import set_value

    root = str(tmp_path / "ds")
    shutil.copytree(dataset["out"], root)
    short = dataset["videos"][dataset["sources"]["short"]]
    set_value(root, short["shard"], "videos", "key", short["key"], "media_size", 10 ** 12)
    long_clip = next(c for c in dataset["clips"] if c["key"] == dataset["key"]["long"]
                     and c["clip_id"] not in dataset["uncaptioned"])
    set_value(root, long_clip["shard"], "clips", "clip_id", long_clip["clip_id"], "start", float("nan"))
    out = tmp_path / "out"
    rc = main(["export", "llava", root, "--out", str(out), "--layer", "caption/v1", "--layer", "writer/v1",
               "--data-root", exported])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "skipped 1 video record(s): bad index row (media_outside_shard)" in printed
    assert "skipped 1 clip record(s): bad index row (bad_times)" in printed
    ids = [r["id"] for p in out.glob("*.jsonl") for r in read_jsonl(str(p))]
    assert ids and not [i for i in ids if i.startswith(short["key"])] and long_clip["clip_id"] not in ids
    assert [i for i in ids if i.startswith(dataset["key"]["long"])]  # the rest of the bad clip's video goes on
    assert short["key"] in caplog.text and long_clip["clip_id"] in caplog.text
