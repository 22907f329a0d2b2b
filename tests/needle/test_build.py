"""``longvid needle build``: needle positions, depths, chain order and option sets as SEEDS.md §5
specifies; byte-identical output per seed; haystacks that span several videos decode the planned
frames; manifests and datasets too small give clear errors."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest

from longvid.cli import main
from longvid.needle import NeedleBuildConfig, build
from longvid.needle import haystack as hay
from longvid.needle import render
from longvid.shards import Storage

LETTERS = "ABCD"


def read_items(bench: str) -> list[dict]:
    with open(os.path.join(bench, "items.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def bench(needle_dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench") / "b")
    build(needle_dataset["root"], out, NeedleBuildConfig(frames=[40, 200], multi_per_length=4, seed=0), log=lambda m: None)
    return out


def test_single_hop_needles_sit_at_each_depth_on_the_clip_grid(bench):
    singles = [r for r in read_items(bench) if r["kind"] == "single"]
    expected = {40: [0, 8, 16, 24, 32, 40], 200: [0, 40, 80, 120, 160, 200]}  # 4 * round(d * L / 4)
    for length, offsets in expected.items():
        rows = [r for r in singles if r["haystack_frames"] == length]
        assert [r["depth"] for r in rows] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        assert [r["insert_at"] for r in rows] == [[o] for o in offsets]
        for r, o in zip(rows, offsets):
            assert r["hops"] == 1 and r["total_frames"] == length + 4
            assert r["needle_positions"] == [[o, o + 1, o + 2, o + 3]]
    for r in singles:
        facts = r["needles"][0]
        assert len(r["options"]) == 4 and len(set(r["options"])) == 4 and r["answer"] in LETTERS
        truth = {"shape": facts.get("shape"), "colour": facts.get("colour"), "number": str(facts.get("number")),
                 "word": str(facts.get("word")).lower()}[facts["family"]]
        assert r["options"][LETTERS.index(r["answer"])] == truth
        assert os.path.isfile(os.path.join(bench, facts["image"]))


def test_multi_hop_chain_order_positions_and_questions(bench):
    multis = [r for r in read_items(bench) if r["kind"] == "multi"]
    assert len(multis) == 8
    for r in multis:
        n, length = r["hops"], r["haystack_frames"]
        assert 5 <= n <= 7 and len(r["needles"]) == n
        parts = [4 * round(i * length / (n - 1) / 4) for i in range(n)]  # needle i after the i-th of n-1 parts
        assert r["insert_at"] == parts and parts[0] == 0 and parts[-1] == length
        assert [p[0] for p in r["needle_positions"]] == [parts[i] + 4 * i for i in range(n)]
        assert r["total_frames"] == length + 4 * n
        labels = [needle["label"] for needle in r["needles"]]
        assert len(set(labels)) == n
        assert [needle["next"] for needle in r["needles"]] == labels[1:] + [""]  # each names the next; last ends
        chain, final = r["questions"]
        assert labels[0] in chain["question"] and (chain["about"], final["about"]) == ("chain", "final")
        assert r["question"] == chain["question"] and r["answer"] == chain["answer"]
        last = r["needles"][-1]
        assert chain["options"][LETTERS.index(chain["answer"])] == last["shape"]
        assert final["options"][LETTERS.index(final["answer"])] == last["colour"] and labels[-1] in final["question"]
        for q in (chain, final):
            assert len(set(q["options"])) == 4
    assert len({r["hops"] for r in multis}) > 1  # the count is drawn, not fixed


def test_haystack_plan_is_one_frame_a_second_across_several_videos(bench, needle_dataset):
    plan = next(r for r in read_items(bench) if r["haystack_frames"] == 200)["haystack"]
    assert sum(len(s["frames"]) for s in plan["segments"]) == 200 and len(plan["segments"]) >= 3
    for segment in plan["segments"]:
        fps = plan["videos"][segment["key"]]["fps"]
        assert segment["frames"] == [int(round(k * fps)) for k in range(len(segment["frames"]))]
    assert len({s["key"] for s in plan["segments"]}) == len(plan["segments"])


@pytest.mark.parametrize("chunk", [256, 7])
def test_planned_frames_decode_like_a_direct_decode_of_the_sources(bench, needle_dataset, chunk, monkeypatch):
    """Seek decoding from the shards gives, frame for frame, what a full PyAV decode of each source does
    (in one decode call per segment, and in calls of 7 frames over the same member file)."""
    from longvid.shards.schema import video_id_for

    monkeypatch.setattr(hay, "DECODE_CHUNK", chunk)
    plan = next(r for r in read_items(bench) if r["haystack_frames"] == 200)["haystack"]
    got = hay.decode_haystack(Storage.for_uri(needle_dataset["root"]), plan, 48)
    by_key = {video_id_for(p): p for p in needle_dataset["paths"]}
    expected = []
    for segment in plan["segments"]:
        with av.open(by_key[segment["key"]]) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        expected.append(hay.resize_frames(np.stack([frames[i] for i in segment["frames"]]), 48))
    assert got.shape == (200, 48, 48, 3)
    assert np.array_equal(got, np.concatenate(expected))


def test_needles_enter_as_four_frame_clips_at_their_positions():
    haystack = np.zeros((12, 2, 2, 3), np.uint8)
    needles = [np.full((2, 2, 3), 100 + i, np.uint8) for i in range(3)]
    seq = hay.insert_needles(haystack, needles, [0, 8, 12], 4)
    assert seq.shape[0] == 24
    marked = [int(seq[t, 0, 0, 0]) for t in range(24)]
    assert marked == [100] * 4 + [0] * 8 + [101] * 4 + [0] * 4 + [102] * 4


def test_same_seed_gives_byte_identical_files(needle_dataset, tmp_path):
    def tree(root):
        out = {}
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = f.read()
        return out

    config = dict(frames=[40, 120], depths=[0.0, 0.5, 1.0], multi_per_length=2)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        build(needle_dataset["root"], str(tmp_path / name), NeedleBuildConfig(seed=seed, **config), log=lambda m: None)
    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert len(a) > 10 and a == b
    assert a["items.jsonl"] != c["items.jsonl"]


def test_answer_letters_are_balanced(bench):
    answers = [q["answer"] for r in read_items(bench) for q in r["questions"]]
    assert len(answers) % 4 == 0 and all(answers.count(x) == len(answers) // 4 for x in LETTERS)


def test_too_small_dataset_is_one_line_error_or_a_note(needle_dataset, tmp_path, capsys):
    code = main(["needle", "build", needle_dataset["root"], "--out", str(tmp_path / "x"), "--frames", "100000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "too small" in err[0] and "--frames 224 or less" in err[0]
    assert main(["needle", "build", needle_dataset["root"], "--out", str(tmp_path / "y"), "--frames", "40,100000",
                 "--depths", "0.5"]) == 0
    assert "skipping haystack length 100000" in capsys.readouterr().err
    with open(tmp_path / "y" / "bench.json") as f:
        bench = json.load(f)
    assert bench["lengths"] == [40] and bench["skipped_lengths"][0]["frames"] == 100000
    assert main(["needle", "build", needle_dataset["root"], "--out", str(tmp_path / "z"), "--frames", "42"]) == 2
    assert "multiples of 4" in capsys.readouterr().err


def test_manifest_needles_keep_their_questions_and_answers(needle_dataset, tmp_path, capsys):
    for i, colour in enumerate(("red", "blue")):
        (tmp_path / f"n{i}.png").write_bytes(render.png_bytes(render.shape_card("circle", colour, 64)))
    rows = [{"image": "n0.png", "question": "What colour is the circle?", "options": ["red", "green", "blue", "black"],
             "answer": "red"},
            {"image": "n1.png", "question": "Which colour?", "options": ["red", "green", "blue", "black"], "answer": "C"}]
    manifest = tmp_path / "needles.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "bench")
    build(needle_dataset["root"], out, NeedleBuildConfig(frames=[40], depths=[0.0, 1.0], multi_per_length=1,
                                                          needles=str(manifest)), log=lambda m: None)
    singles = [r for r in read_items(out) if r["kind"] == "single"]
    assert {(r["question"], r["answer"]) for r in singles} == {("What colour is the circle?", "A"), ("Which colour?", "C")}
    for r in singles:
        stored = render.read_image(os.path.join(out, r["needles"][0]["image"]))
        assert stored.shape == (64, 64, 3)
    rows[1]["options"] = ["red", "green", "blue"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["needle", "build", needle_dataset["root"], "--out", str(tmp_path / "bad"), "--frames", "40",
                 "--needles", str(manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 2" in err[0] and "4 distinct" in err[0]


def test_export_media_writes_each_item_as_a_1fps_video_with_its_questions(needle_dataset, tmp_path):
    out = str(tmp_path / "media-bench")
    assert main(["needle", "build", needle_dataset["root"], "--out", out, "--frames", "40", "--depths", "0.5",
                 "--multi-per-length", "1", "--export-media", "--media-size", "64"]) == 0
    items = read_items(out)
    with open(os.path.join(out, "media", "questions.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert [line["id"] for line in lines] == [r["id"] for r in items]
    for item, line in zip(items, lines):
        with av.open(os.path.join(out, line["video"])) as container:
            stream = container.streams.video[0]
            assert float(stream.average_rate) == 1.0
            frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(stream)]
        assert len(frames) == line["frames"] == item["total_frames"] and frames[0].shape == (64, 64, 3)
        for needle, positions in zip(item["needles"], item["needle_positions"]):
            picture = hay.resize_frames(render.read_image(os.path.join(out, needle["image"]))[None], 64)[0].astype(int)
            for p in positions:  # the needle's four frames show the needle (up to H.264 loss), the others do not
                assert np.abs(frames[p] - picture).mean() < 12
        others = [t for t in range(len(frames)) if all(t not in p for p in item["needle_positions"])]
        first = hay.resize_frames(render.read_image(os.path.join(out, item["needles"][0]["image"]))[None], 64)[0]
        assert min(np.abs(frames[t] - first.astype(int)).mean() for t in others) > 30
        assert [q["answer"] for q in line["questions"]] == [q["answer"] for q in item["questions"]]
        assert all("(D) " in q["prompt"] for q in line["questions"])


def test_build_and_decode_from_s3(needle_dataset, s3_bucket, tmp_path):
    """A dataset on S3 (moto's server): the index parts and the haystack's byte ranges come over HTTP."""
    import boto3

    client = boto3.client("s3")
    for folder, _, names in os.walk(needle_dataset["root"]):
        for name in names:
            path = os.path.join(folder, name)
            client.upload_file(path, s3_bucket, "ds/" + os.path.relpath(path, needle_dataset["root"]))
    remote, local = str(tmp_path / "remote"), str(tmp_path / "local")
    config = dict(frames=[120], depths=[0.5], multi_per_length=0)
    build(f"s3://{s3_bucket}/ds", remote, NeedleBuildConfig(**config), log=lambda m: None)
    build(needle_dataset["root"], local, NeedleBuildConfig(**config), log=lambda m: None)
    plan = read_items(remote)[0]["haystack"]
    assert plan == read_items(local)[0]["haystack"]  # same seeded plan from the same index
    got = hay.decode_haystack(Storage.for_uri(f"s3://{s3_bucket}/ds"), plan, 48)
    assert np.array_equal(got, hay.decode_haystack(Storage.for_uri(needle_dataset["root"]), plan, 48))
