"""``longvid needle eval``: end to end on a tiny random checkpoint (real model, real decode, resume),
PivotKV, a refused resume with other settings, and an always-"A" model scoring at chance."""

from __future__ import annotations

import json
import os

import pytest

from longvid.cli import main
from longvid.needle import NeedleBuildConfig, NeedleEvalConfig, build, evaluate
from longvid.needle import evaluation as evaluation_module


@pytest.fixture(scope="module")
def small_bench(needle_dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval-bench") / "b")
    build(needle_dataset["root"], out, NeedleBuildConfig(frames=[40, 80], depths=[0.0, 0.5, 1.0], multi_per_length=1),
          log=lambda m: None)
    return out


def scored_ids(path: str) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["id"] for line in f]


def test_eval_end_to_end_on_a_tiny_checkpoint_resumes(small_bench, tiny_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["needle", "eval", small_bench, "--model", tiny_checkpoint, "--out", out, "--limit", "3"]) == 0
    err = capsys.readouterr().err
    assert "[1/3] single-40-d0-0" in err and "[3/3]" in err and "frames/s" in err
    assert scored_ids(os.path.join(out, "scored.jsonl")) == ["single-40-d0-0", "single-40-d0.5-0", "single-40-d1-0"]
    # the rest, resumed: the three scored items are not asked again
    assert main(["needle", "eval", small_bench, "--model", tiny_checkpoint, "--out", out]) == 0
    err = capsys.readouterr().err
    assert "3 already scored, 5 to go" in err and "single-40-d0-0:" not in err
    ids = scored_ids(os.path.join(out, "scored.jsonl"))
    assert len(ids) == len(set(ids)) == 8
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["items_scored"] == 8
    assert set(results["single_hop"]["by_length_depth"]) == {"40", "80"}
    assert set(results["single_hop"]["by_length_depth"]["80"]) == {"0", "0.5", "1"}
    assert set(results["multi_hop"]["by_length"]) == {"40", "80"}
    assert results["frames_per_s"] > 0 and results["peak_memory_mb"] > 0
    with open(os.path.join(out, "scored.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    multi = next(r for r in rows if r["id"] == "multi-80-0")
    assert len(multi["replies"]) == 2 and multi["score"] == sum(multi["correct"]) / 2
    assert multi["frames"] == 80 + 4 * len(json.loads(open(os.path.join(small_bench, "items.jsonl")).readlines()[-1])["needles"])
    with open(os.path.join(out, "heatmap.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # other settings in the same folder: refused with one line
    assert main(["needle", "eval", small_bench, "--model", tiny_checkpoint, "--out", out, "--pivotkv"]) == 2
    assert "differs in: pivotkv" in capsys.readouterr().err
    missing = str(tmp_path / "missing")
    assert main(["needle", "eval", small_bench, "--model", str(tmp_path / "nope"), "--out", missing]) == 2
    assert "no saved model" in capsys.readouterr().err and not os.path.exists(missing)


def test_eval_with_pivotkv_and_without_hico(small_bench, tiny_checkpoint, tmp_path):
    for flags in (["--pivotkv", "--chunk-frames", "8", "--max-input-length", "200"], ["--no-hico"]):
        out = str(tmp_path / flags[0])
        assert main(["needle", "eval", small_bench, "--model", tiny_checkpoint, "--out", out, "--limit", "2"] + flags) == 0
        assert len(scored_ids(os.path.join(out, "scored.jsonl"))) == 2


def test_a_model_that_always_says_a_scores_at_chance(small_bench, tiny_checkpoint, tmp_path, monkeypatch):
    """Only the answer function is replaced (it replies "A"); decoding, needle insertion, parsing and
    scoring are the real ones. The builder spreads right answers evenly over A-D, so the rate is 1/4."""
    from longvid.model.cli import load_model

    asked = []

    def always_a(model, frames, prompt, config):
        asked.append((frames.shape, prompt))
        return "A"

    monkeypatch.setattr(evaluation_module, "answer_question", always_a)
    results = evaluate(small_bench, NeedleEvalConfig(model=tiny_checkpoint, out=str(tmp_path / "a")),
                       model=load_model(tiny_checkpoint, "cpu"), log=lambda m: None)
    with open(os.path.join(small_bench, "items.jsonl")) as f:
        items = [json.loads(line) for line in f]
    questions = [q for item in items for q in item["questions"]]
    assert len(asked) == len(questions) == 10
    assert asked[0][0][0] == items[0]["total_frames"] and "(D) " in asked[0][1] and "seconds" in asked[0][1]
    singles = [i for i in items if i["kind"] == "single"]
    expected_single = sum(i["answer"] == "A" for i in singles) / len(singles)
    multis = [i for i in items if i["kind"] == "multi"]
    expected_multi = sum(sum(q["answer"] == "A" for q in i["questions"]) / 2 for i in multis) / len(multis)
    assert results["single_hop"]["accuracy"] == pytest.approx(expected_single, abs=1e-6)
    assert results["multi_hop"]["score"] == pytest.approx(expected_multi, abs=1e-6)
    assert results["unparsed_answers"] == 0
    right = sum(q["answer"] == "A" for q in questions)
    assert 2 <= right <= 3  # 10 questions: right answers in blocks of four, one of each letter
