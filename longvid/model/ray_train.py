"""Many workers with Ray Train: the trainer's own loop (trainer.train) under a DDP strategy.

Ordering rules: freeze a stage's parts before wrapping (DDP registers only trainable parameters),
so the model is re-wrapped per stage; every rank reads its own data shard; rank 0 writes the model,
every rank its data position, into a checkpoint folder on storage all workers share.
"""

from __future__ import annotations

import json
import os

import torch

from ..config import from_dict, to_dict
from .config import TrainConfig
from .trainer import LocalStrategy, train


class RayDDPStrategy(LocalStrategy):
    """DDP over the process group Ray Train set up (gloo on CPU, nccl on GPU)."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()
        self._last: dict = {}

    def wrap(self, model):
        import ray.train.torch

        # unused parameters exist by design: the tower's layers above feature_layer, poolers
        return ray.train.torch.prepare_model(model, parallel_strategy="ddp",
                                             parallel_strategy_kwargs={"find_unused_parameters": True})

    def no_sync(self, wrapped):
        return wrapped.no_sync()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        torch.distributed.barrier()

    def report(self, record: dict) -> None:
        self._last = {k: v for k, v in record.items() if isinstance(v, (int, float, str))}


def _worker_loop(loop_config: dict) -> None:
    import tempfile

    import ray.train

    config = from_dict(TrainConfig, loop_config["config"])
    strategy = RayDDPStrategy()
    summary = train(config, strategy)
    losses = [r["loss"] for r in summary.records]
    metrics = {"steps": len(losses), "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None, "world_size": strategy.world_size,
               "rank": strategy.rank, **strategy._last}
    with tempfile.TemporaryDirectory() as pointer_dir:
        checkpoint = None
        if strategy.is_main:
            # Ray keeps metrics only with a checkpoint; ours stays where the trainer wrote it, and
            # Ray's copy is a pointer to it (not a second copy of the weights)
            with open(os.path.join(pointer_dir, "longvid_checkpoint.json"), "w", encoding="utf-8") as f:
                json.dump({"checkpoint": summary.checkpoints[-1] if summary.checkpoints else None}, f)
            checkpoint = ray.train.Checkpoint.from_directory(pointer_dir)
        ray.train.report(metrics, checkpoint=checkpoint)


def train_with_ray(config: TrainConfig, num_workers: int, use_gpu: bool = False) -> dict:
    """Run ``trainer.train`` on ``num_workers`` Ray Train workers; returns rank 0's last metrics."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    config.output_dir = os.path.abspath(config.output_dir)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"config": to_dict(config)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(storage_path=os.path.join(config.output_dir, "ray"), name="train"),
    )
    result = trainer.fit()
    return dict(result.metrics or {})
