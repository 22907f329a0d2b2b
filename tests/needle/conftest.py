"""A small ingested dataset of low-rate videos (5 fps: 1-fps haystacks of a few hundred frames cost
little to encode) and a tiny random checkpoint saved to disk, built once per session."""

from __future__ import annotations

import pytest
import torch

from longvid.synthetic import write_known_cut_dataset, write_video

# (seconds, width, GOP in frames) per video: 226 s at 1 fps in all, every video shorter than 80 s
VIDEOS = [(50, 64, 10), (42, 80, 25), (61, 64, 10), (38, 72, 50), (35, 64, 10)]
FPS = 5


@pytest.fixture(scope="session")
def needle_dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("needle-data")
    paths = []
    for i, (seconds, width, gop) in enumerate(VIDEOS):
        frames = seconds * FPS
        path = str(base / f"v{i}.mp4")
        truth = write_video(path, [frames // 2 + i, frames - frames // 2 - i], fps=FPS, width=width, height=48, gop=gop)
        paths.append((path, truth.cuts))
    root = str(base / "ds")
    write_known_cut_dataset(root, paths, per_shard=2)
    return {"root": root, "paths": [p for p, _ in paths]}


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A saved tiny VideoLLM (CLIP tower 48 px, 4-layer Qwen2), loaded by eval as a real checkpoint."""
    from transformers.utils import logging as hf_logging

    from longvid.model.tiny import tiny_model_config
    from longvid.model.videollm import VideoLLM

    hf_logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("needle-model")
    model = VideoLLM.from_config(tiny_model_config(str(root / "parts"), vision="clip"), seed=0)
    path = str(root / "checkpoint")
    model.save_pretrained(path)
    return path
