"""``longvid export llava`` against VideoChat-Flash's documented record and YAML contract
(OpenGVLab/VideoChat-Flash @ 2f8e2f5, ``llava-train_videochat/llava/train/train.py``
LazySupervisedDataset and ``llava/video_utils.py``; flags of its stage-2 and stage-3 scripts
``stage2_umt_tome16_res448_qwen_1_5b.sh`` / ``stage3_umt_tome16_res448_qwen_1_5b.sh``):
the YAML is read as the peer reads it, ``data_root`` joined to each record's ``video``, every
file opened with decord (its default reader) or PyAV's stream duration (its ``av`` reader), and
the frame count taken by the peer's ``dynamic_fps1`` rule with the script's flags."""

from __future__ import annotations

import json
import math
import os
import re

import av
import decord
import pytest
import yaml

from longvid.cli import main
from tests.pipelines.test_export import dataset  # noqa: F401  (the shared ingested fixture)

# --frames_upbound / --frames_lowbound / --local_num_frames of the peer's scripts (lowbound's default is 1)
PEER_FLAGS = {"stage2": (8, 1, 4), "stage3": (512, 64, 4)}


def peer_num_frames(vlen: int, fps: float, upbound: int, lowbound: int, local: int) -> int:
    """video_utils.get_frame_indices with sample='dynamic_fps1': the count it returns (padded)."""
    min_num_frames = lowbound
    if min_num_frames > vlen:
        min_num_frames = (vlen // local) * local
    duration = float(vlen) / fps
    segments = int(duration // local)
    num_frames = local if segments == 0 else local * segments
    num_frames = min(num_frames, upbound)
    return max(min_num_frames, num_frames)


def peer_load(yaml_path: str) -> list[dict]:
    """LazySupervisedDataset.__init__ for a .yaml data_path (local files), as the peer does it."""
    with open(yaml_path) as f:
        datasets = yaml.safe_load(f)["datasets"]
    samples = []
    for entry in datasets:
        strategy = entry.get("sampling_strategy", "all")
        with open(entry["json_path"]) as f:
            records = [json.loads(line.strip()) for line in f]
        assert len(records) > 0
        if ":" in strategy:
            name, number = strategy.split(":")
            number = math.ceil(int(number.split("%")[0]) * len(records) / 100) if "%" in number else int(number)
            records = {"first": records[:number], "end": records[-number:]}[name]
        for r in records:
            r["video_read_type"] = entry["video_read_type"]
            r["video"] = os.path.join(entry.get("data_root", ""), r["video"])
        assert os.path.exists(records[0]["video"])  # the peer's "Data in ... can't be read!" check
        samples.extend(records)
    return samples


@pytest.mark.parametrize("stage, read_type, time_prompt", [("stage2", "decord", False), ("stage3", "av", True)])
def test_every_record_loads_as_the_peer_loads_it(dataset, tmp_path, stage, read_type, time_prompt):  # noqa: F811
    out = tmp_path / "llava"
    args = ["export", "llava", dataset["out"], "--out", str(out), "--layer", "caption/v1", "--layer", "writer/v1",
            "--stage", stage, "--video-read-type", read_type, "--sampling-strategy", "first:100%"]
    assert main(args + (["--time-prompt"] if time_prompt else [])) == 0
    samples = peer_load(str(out / "llava_data.yaml"))
    assert {"clip", "video"} <= {"clip" if "/clips/" in s["video"] else "video" for s in samples}
    upbound, lowbound, local = PEER_FLAGS[stage]
    for s in samples:
        assert "start" not in s and "end" not in s  # else the peer routes it to its Ceph-only lazy reader
        assert s["video_read_type"] == read_type
        text = "".join(t["value"] for t in s["conversations"])
        assert text.count("<image>") == 1 and s["conversations"][0]["value"].startswith("<image>\n")
        assert [t["from"] for t in s["conversations"]] == ["human", "gpt"] * (len(s["conversations"]) // 2)
        if read_type == "decord":
            reader = decord.VideoReader(s["video"], num_threads=1)
            vlen, fps = len(reader), reader.get_avg_fps()
        else:  # read_frames_av: decodes every frame, duration from the stream (None in MKV/WebM)
            with av.open(s["video"]) as c:
                stream = c.streams.video[0]
                assert s["video"].endswith(".mp4") and stream.duration is not None
                vlen = sum(1 for _ in c.decode(stream))
                fps = vlen / float((stream.duration - (stream.start_time or 0)) * stream.time_base)
        n = peer_num_frames(vlen, fps, upbound, lowbound, local)
        assert n % local == 0 and n >= local  # else its dynamic_fps1 check raises
        if read_type == "decord":
            reader.get_batch(list(range(0, vlen, max(1, vlen // n)))[:n]).asnumpy()
        prompt = re.search(r"and (\d+) frames are uniformly sampled", s["conversations"][0]["value"])
        assert bool(prompt) == time_prompt
        if prompt:
            assert int(prompt.group(1)) == n  # our prompt states what the peer will sample
        assert stage != "stage2" or n <= 8


@pytest.mark.parametrize("strategy", ["first:0", "end:0", "first:0%", "random:5", "first:1.5%", "middle:3", "first"])
def test_sampling_strategies_the_peer_cannot_run_are_refused(dataset, tmp_path, capsys, strategy):  # noqa: F811
    rc = main(["export", "llava", dataset["out"], "--out", str(tmp_path), "--layer", "caption/v1",
               "--sampling-strategy", strategy])
    assert rc == 2 and "sampling_strategy must be" in capsys.readouterr().err


def test_a_strategy_that_empties_a_file_is_refused_before_anything_is_published(dataset, tmp_path, capsys):  # noqa: F811
    rc = main(["export", "llava", dataset["out"], "--out", str(tmp_path), "--layer", "caption/v1",
               "--unit", "video", "--sampling-strategy", "first2:50"])
    assert rc == 2 and "keeps no record" in capsys.readouterr().err
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".jsonl") or n.endswith(".yaml")]


def test_text_over_the_budget_is_split_at_turns_or_dropped_and_counted(dataset, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "llava"
    rc = main(["export", "llava", dataset["out"], "--out", str(out), "--layer", "writer/v1", "--unit", "video",
               "--max-text-tokens", "12", "--tokenizer", "no-such/tokenizer"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "estimate: 4 characters a token" in printed  # the named tokenizer is not available offline
    records = [json.loads(line) for n in os.listdir(out) if n.endswith(".jsonl") for line in open(out / n)]
    short = dataset["key"]["short"]
    # "Summarize the video." + "A short test video." fits 12 tokens at 4 chars; the QA turn alone does too
    assert sorted(r["id"] for r in records) == [f"{short}_part0", f"{short}_part1"]
    for r in records:
        assert sum(math.ceil(len(t["value"]) / 4) for t in r["conversations"]) <= 12
        assert r["conversations"][0]["value"].startswith("<image>\n")
    assert "1 conversation(s) split into 1 extra record(s)" in printed
    rc = main(["export", "llava", dataset["out"], "--out", str(tmp_path / "tiny"), "--layer", "writer/v1",
               "--unit", "video", "--max-text-tokens", "3"])
    assert rc == 0
    assert "skipped 1 video record(s): a single turn longer than --max-text-tokens" in capsys.readouterr().out


def test_a_local_tokenizer_counts_the_tokens(dataset, tmp_path, capsys):  # noqa: F811
    from longvid.annotators.tiny_models import build_tiny_qwen2

    path = build_tiny_qwen2(str(tmp_path / "tiny-qwen2"))  # a Qwen2 tokenizer trained on the spot (no hub)
    rc = main(["export", "llava", dataset["out"], "--out", str(tmp_path / "o"), "--layer", "writer/v1",
               "--unit", "video", "--tokenizer-path", path])
    assert rc == 0 and f"tokenizer {path}" in capsys.readouterr().out


def test_where_exports_only_the_videos_it_keeps_and_their_clips(dataset, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "long-only"
    assert main(["export", "llava", dataset["out"], "--out", str(out), "--layer", "caption/v1",
                 "--where", "duration >= 30"]) == 0
    records = [json.loads(line) for n in os.listdir(out) if n.endswith(".jsonl") for line in open(out / n)]
    long_key = dataset["key"]["long"]
    assert records and all(r["id"].startswith(long_key) for r in records)
    capsys.readouterr()
    assert main(["export", "llava", dataset["out"], "--out", str(tmp_path / "x"), "--where", "motion_score > 1"]) == 2
    assert "motion_score" in capsys.readouterr().err
    assert main(["export", "llava", dataset["out"], "--out", str(tmp_path / "y"), "--where", "__import__('os')"]) == 2
