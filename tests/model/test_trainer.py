"""The trainer on a generated captioning set: the loss falls, stop-and-resume repeats an
uninterrupted run exactly, micro-batches respect the token budget and resume without loss."""

import copy
import json

import pytest

from longvid.config import ConfigError
from longvid.model.config import DataConfig, StageConfig, TrainConfig, load_train_config
from longvid.model.data import MicroBatches
from longvid.model.toydata import SyntheticCaptions
from longvid.model.trainer import latest_checkpoint, train


def toy_config(tiny_config, output_dir, steps, lr=3e-3, save_every=1000, **kwargs):
    stage = StageConfig("toy", ["all"], lr, lr, 8, 8, 4096, steps=steps, warmup_ratio=0.05)
    return TrainConfig(model=copy.deepcopy(tiny_config), stages=[stage], output_dir=str(output_dir),
                       data=DataConfig(source="toy", options={"num_samples": 32}), micro_batch_tokens=1000, max_micro_batch=4,
                       log_every=1000, save_every=save_every, **kwargs)


def test_loss_falls_on_generated_captions(tiny_config, tmp_path):
    summary = train(toy_config(tiny_config, tmp_path, steps=90))
    losses = [r["loss"] for r in summary.records]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert len(losses) == 90
    assert last < 0.25 * first, (first, last)
    record = summary.records[-1]
    assert record["visual_tokens_per_sample"] == 128 and record["samples"] == 4 and record["tokens_per_s"] > 0
    log = [json.loads(line) for line in open(tmp_path / "train_log.jsonl")]
    assert len(log) == 90 and log[-1]["loss"] == pytest.approx(losses[-1])


def test_stop_and_resume_gives_the_same_losses(tiny_config, tmp_path):
    straight = train(toy_config(tiny_config, tmp_path / "a", steps=6, grad_accum=2))
    first = train(toy_config(tiny_config, tmp_path / "b", steps=6, grad_accum=2), stop_after=3)
    assert first.stopped
    assert latest_checkpoint(str(tmp_path / "b")).endswith("toy-step-0000003")
    # a new process would rebuild everything from the config and the checkpoint: so does this
    second = train(toy_config(tiny_config, tmp_path / "b", steps=6, grad_accum=2))
    assert second.resumed_from is not None
    resumed = [r["loss"] for r in first.records + second.records]
    assert resumed == [r["loss"] for r in straight.records]
    assert [r["lr"] for r in first.records + second.records] == [r["lr"] for r in straight.records]


def test_two_stages_run_in_order_and_a_finished_run_does_nothing(tiny_config, tmp_path):
    config = toy_config(tiny_config, tmp_path, steps=2)
    config.stages = [StageConfig("align", ["projector"], 1e-3, 0.0, 4, 4, 4096, steps=2),
                     StageConfig("joint", ["all"], 1e-4, 1e-5, 8, 8, 4096, steps=2)]
    summary = train(config)
    assert [(r["stage"], r["visual_tokens_per_sample"]) for r in summary.records] == [
        ("align", 64), ("align", 64), ("joint", 128), ("joint", 128)]
    assert train(config).records == []


def test_micro_batches_hold_the_overflowing_sample_for_the_next_batch(tiny_model):
    def batches(state=None):
        source = SyntheticCaptions(8, 8, num_samples=10, seed=1)
        mb = MicroBatches(source, tiny_model.prepare, budget=500, max_batch=8, max_length=4096, max_frames=8)
        if state:
            mb.load_state_dict(state)
        return mb

    mb = batches()
    first = mb.next_batch()
    assert len(first) == 2 and max(s.length for s in first) * 2 <= 500  # a third would overflow
    state = mb.state_dict()
    expected = [s.key for s in mb.next_batch()]
    assert [s.key for s in batches(json.loads(json.dumps(state))).next_batch()] == expected
    too_many = MicroBatches(SyntheticCaptions(8, 8, num_samples=3), tiny_model.prepare, 10_000, 4,
                            max_length=4096, max_frames=4)
    too_many.source = iter_limited(too_many.source, 3)
    assert too_many.next_batch() == [] and too_many.skipped == {"too many frames": 3}


class iter_limited:
    """A finite view of an endless source (same state methods)."""

    def __init__(self, source, n):
        self.source, self.n = source, n

    def __iter__(self):
        for _, sample in zip(range(self.n), self.source):
            yield sample

    def state_dict(self):
        return self.source.state_dict()

    def load_state_dict(self, state):
        self.source.load_state_dict(state)


def test_data_state_refuses_another_recipe():
    state = SyntheticCaptions(seed=1).state_dict()
    with pytest.raises(ValueError, match="data state"):
        SyntheticCaptions(seed=2).load_state_dict(state)


def test_yaml_config_with_the_four_stages(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  hico:\n    dropout_layers: [4, 18]\nrun_stages: [stage3]\ngrad_accum: 4\n"
                    "data:\n  source: toy\n")
    config = load_train_config(str(path))
    assert [s.name for s in config.stages] == ["stage1", "stage2", "stage3", "stage4"]
    assert (config.stages[0].trainable, config.stages[0].lr, config.stages[0].frames_hi) == (["projector"], 1e-3, 4)
    assert config.stages[3].image_size == 448 and config.grad_accum == 4
    path.write_text("model:\n  hico:\n    dropout_modes: [uniform, random]\ndata:\n  source: toy\n")
    with pytest.raises(ConfigError, match="unknown mode"):
        load_train_config(str(path))
    path.write_text("data:\n  source: os:system\n")
    with pytest.raises(ConfigError, match="longvid"):
        load_train_config(str(path))
    path.write_text("grad_accum: 4\n")  # no data named: refused, never a silent toy data set
    with pytest.raises(ConfigError, match="data.source is not set"):
        load_train_config(str(path))
