"""``longvid train`` from a YAML file and ``longvid ask`` on a generated video, through the real
command line (one process, tiny random models)."""

import json

import yaml

from longvid.cli import main
from longvid.synthetic import write_video


def test_train_then_ask(tiny_config, tmp_path, capsys):
    config = {
        "model": {"vision": {"name_or_path": tiny_config.vision.name_or_path},
                  "llm": {"name_or_path": tiny_config.llm.name_or_path},
                  "hico": {"dropout_layers": [1, 3]}},
        "stages": [{"name": "stage2", "trainable": ["projector", "llm"], "lr": 1e-3, "frames_lo": 1,
                    "frames_hi": 8, "max_length": 4096, "steps": 2}],
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--data.source", "toy", "--data-option", "num_samples=8", "--grad-accum", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["last"]["samples"] > 0

    video = write_video(str(tmp_path / "clip.mp4"), [60, 40], fps=10, width=64, height=48)  # 10 s
    args = ["ask", str(tmp_path / "run"), video.path, "What happens?", "--stage", "stage2", "--json",
            "--max-new-tokens", "3"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["frames"] == 8 and plain["prompt_tokens"] > 8 * 16  # stage 2 plan: 8 frames of a 10 s video
    assert main(args + ["--pivotkv", "--chunk-frames", "4", "--max-input-length", "100"]) == 0
    squeezed = json.loads(capsys.readouterr().out)
    assert squeezed["prompt_tokens"] == plain["prompt_tokens"]
    assert squeezed["kv_cache_bytes"] < plain["kv_cache_bytes"]


def test_ask_reports_a_missing_checkpoint(tmp_path, capsys):
    video = write_video(str(tmp_path / "clip.mp4"), [20], fps=10, width=64, height=48)
    assert main(["ask", str(tmp_path / "nothing"), video.path, "Why?"]) == 1
    assert "no saved model" in capsys.readouterr().err
