"""Two Ray Train workers (CPU, gloo) run the same training code: both shards advance, rank 0
writes one model, each rank its own data position."""

import copy
import json
import os

import pytest

from longvid.model.config import DataConfig, StageConfig, TrainConfig
from longvid.model.ray_train import train_with_ray
from longvid.model.trainer import latest_checkpoint


@pytest.mark.slow
def test_two_workers_complete_a_short_run(ray_local, tiny_config, tmp_path):
    stage = StageConfig("toy", ["projector", "llm"], 1e-3, 0.0, 4, 4, 4096, steps=3)
    config = TrainConfig(model=copy.deepcopy(tiny_config), stages=[stage], output_dir=str(tmp_path / "run"),
                         data=DataConfig(source="toy", options={"num_samples": 16}), micro_batch_tokens=600, max_micro_batch=2)
    metrics = train_with_ray(config, num_workers=2)
    assert metrics["steps"] == 3 and metrics["world_size"] == 2 and metrics["rank"] == 0
    assert metrics["samples"] == 4  # two per worker, summed over both
    checkpoint = latest_checkpoint(str(tmp_path / "run"))
    states = [json.load(open(os.path.join(checkpoint, f"data-rank{r}.json"))) for r in (0, 1)]
    assert [s["recipe"]["rank"] for s in states] == [0, 1] and all(s["position"] == 6 for s in states)
    assert os.path.isfile(os.path.join(checkpoint, "model", "longvid_model.json"))
