"""The curriculum trainer: stages from config (what trains, learning rates, frame bounds, max length),
token-budget micro-batches, gradient accumulation, cosine schedule with warm-up, bf16 autocast
where the hardware has it, checkpoints that resume model, optimiser, schedule and data position.

Distribution enters only through a ``Strategy`` (this file's ``LocalStrategy`` is one process;
``ray_train.py`` gives the DDP one): the training code is the same either way.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field

import torch

from .config import StageConfig, TrainConfig
from .data import MicroBatches, load_factory
from .videollm import IGNORE, VideoLLM

LATEST = "latest"  # file in output_dir/checkpoints naming the newest complete checkpoint
STATE_FILE = "trainer_state.pt"


class LocalStrategy:
    """One process, no collectives. The DDP strategy (ray_train.py) overrides every method."""

    rank = 0
    world_size = 1

    def __init__(self, device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def no_sync(self, wrapped: torch.nn.Module):
        return contextlib.nullcontext()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        return values

    def barrier(self) -> None:
        pass

    def report(self, record: dict) -> None:
        pass


@dataclass
class TrainSummary:
    records: list[dict] = field(default_factory=list)  # one per optimiser step
    checkpoints: list[str] = field(default_factory=list)
    resumed_from: str | None = None
    stopped: bool = False  # ended early by ``stop_after`` (a checkpoint was written there)


def autocast_context(precision: str, device: torch.device):
    use_bf16 = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def build_optimizer(model: VideoLLM, stage: StageConfig, weight_decay: float) -> torch.optim.Optimizer:
    vision = [p for p in model.vision.parameters() if p.requires_grad]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("vision.")]
    groups = [{"params": rest, "lr": stage.lr}]
    if vision:
        groups.append({"params": vision, "lr": stage.vision_lr or stage.lr})
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"stage {stage.name}: nothing to train (trainable={stage.trainable})")
    return torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=weight_decay)


def cosine_with_warmup(optimizer, stage: StageConfig) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(round(stage.warmup_ratio * stage.steps))
    floor = stage.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, stage.steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- checkpoints -----------------------------------------------------------------------------
def latest_checkpoint(output_dir: str) -> str | None:
    pointer = os.path.join(output_dir, "checkpoints", LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as f:
        name = f.read().strip()
    path = os.path.join(output_dir, "checkpoints", os.path.basename(name))
    return path if os.path.isdir(path) else None


def save_checkpoint(config: TrainConfig, strategy, model: VideoLLM, optimizer, scheduler, batches: MicroBatches,
                    stage: StageConfig, step: int) -> str:
    """Everything written under a temporary name, renamed when complete, then ``latest`` updated."""
    root = os.path.join(config.output_dir, "checkpoints")
    name = f"{stage.name}-step-{step:07d}"
    final, tmp = os.path.join(root, name), os.path.join(root, name + ".tmp")
    if strategy.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    strategy.barrier()
    with open(os.path.join(tmp, f"data-rank{strategy.rank}.json"), "w", encoding="utf-8") as f:
        json.dump(batches.state_dict(), f)
    if strategy.is_main:
        model.save_pretrained(os.path.join(tmp, "model"))
        torch.save({"stage": stage.name, "step": step, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                    "world_size": strategy.world_size}, os.path.join(tmp, STATE_FILE))
    strategy.barrier()
    if strategy.is_main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        with open(os.path.join(root, LATEST + ".tmp"), "w", encoding="utf-8") as f:
            f.write(name)
        os.replace(os.path.join(root, LATEST + ".tmp"), os.path.join(root, LATEST))
        _prune(root, keep=config.keep_checkpoints, newest=name)
    strategy.barrier()
    return final


def _prune(root: str, keep: int, newest: str) -> None:
    done = sorted((d for d in os.listdir(root) if "-step-" in d and not d.endswith(".tmp")),
                  key=lambda d: os.path.getmtime(os.path.join(root, d)))
    for old in done[: max(0, len(done) - keep)]:
        if old != newest:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)


def load_trainer_state(path: str, rank: int, world_size: int) -> tuple[dict, dict]:
    """The trainer state and this rank's data state. Written by another world size, the data state is
    every old rank's (all taken at the same step): ``{"ranks": [...]}``, which a ShardStream turns into
    this rank's share of what no old rank consumed (a source without that support refuses it)."""
    state = torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=True)
    old_world = int(state["world_size"])
    ranks = [rank] if old_world == world_size else list(range(old_world))
    data_states = []
    for r in ranks:
        with open(os.path.join(path, f"data-rank{r}.json"), encoding="utf-8") as f:
            data_states.append(json.load(f))
    return state, (data_states[0] if old_world == world_size else {"ranks": data_states})


# ---- the loop --------------------------------------------------------------------------------
def train(config: TrainConfig, strategy=None, stop_after: int | None = None) -> TrainSummary:
    """Run the configured stages in order, resuming from the latest checkpoint when asked.
    ``stop_after`` ends this call after that many optimiser steps, with a checkpoint (a
    time-limited job; what a preemption looks like to the next run)."""
    strategy = strategy or LocalStrategy()
    summary = TrainSummary()
    resume = latest_checkpoint(config.output_dir) if config.resume else None
    resume_state = resume_data = None
    if resume:
        resume_state, resume_data = load_trainer_state(resume, strategy.rank, strategy.world_size)
        model = VideoLLM.from_pretrained(os.path.join(resume, "model"))
        summary.resumed_from = resume
    else:
        model = VideoLLM.from_config(config.model, seed=config.seed)
    model.set_hico(config.model.hico)  # a checkpoint brings weights; this run's config says how to compress
    if config.model.llm.gradient_checkpointing:
        model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(strategy.device)
    names = config.run_stages or [s.name for s in config.stages]
    stages = [s for s in config.stages if s.name in names]
    if resume_state is not None:
        done = [s.name for s in stages].index(resume_state["stage"]) if resume_state["stage"] in names else -1
        stages = stages[max(done, 0):]
    for stage in stages:
        here = resume_state is not None and resume_state["stage"] == stage.name
        run_stage(config, strategy, model, stage, summary,
                  resume_state if here else None, resume_data if here else None, stop_after)
        if summary.stopped:
            break
    return summary


def run_stage(config: TrainConfig, strategy, model: VideoLLM, stage: StageConfig, summary: TrainSummary,
              resume_state: dict | None, resume_data: dict | None, stop_after: int | None = None) -> None:
    start = resume_state["step"] if resume_state else 0
    if start >= stage.steps:
        return
    model.set_trainable(stage.trainable)
    model.train()
    wrapped = strategy.wrap(model)
    optimizer = build_optimizer(model, stage, config.weight_decay)
    scheduler = cosine_with_warmup(optimizer, stage)
    factory = load_factory(config.data.source)
    source = factory(stage, rank=strategy.rank, world_size=strategy.world_size, seed=config.seed, **config.data.options)
    image_size = stage.image_size or None
    batches = MicroBatches(source, lambda s: model.prepare(s, image_size), config.micro_batch_tokens,
                           config.max_micro_batch, stage.max_length, stage.frames_hi)
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        torch.set_rng_state(resume_state["rng"])
        batches.load_state_dict(resume_data)
    for step in range(start, stage.steps):
        record = train_step(config, strategy, model, wrapped, optimizer, scheduler, batches, image_size)
        if record is None:
            if strategy.is_main:
                print(f"[{stage.name}] data exhausted after {step} steps", flush=True)
            break
        record.update(stage=stage.name, step=step + 1)
        summary.records.append(record)
        _log(config, strategy, record, step + 1)
        summary.stopped = stop_after is not None and len(summary.records) >= stop_after
        if (step + 1) % config.save_every == 0 or step + 1 == stage.steps or summary.stopped:
            summary.checkpoints.append(
                save_checkpoint(config, strategy, model, optimizer, scheduler, batches, stage, step + 1))
        if summary.stopped:
            return


def train_step(config: TrainConfig, strategy, model: VideoLLM, wrapped, optimizer, scheduler,
               batches: MicroBatches, image_size: int | None) -> dict | None:
    began = time.perf_counter()
    micro = [batches.next_batch() for _ in range(config.grad_accum)]
    micro = [m for m in micro if m]
    if not micro:
        return None
    supervised = sum(sum(1 for label in s.labels if label != IGNORE) for m in micro for s in m)
    optimizer.zero_grad(set_to_none=True)
    loss_sum, tokens, visual = 0.0, 0, []
    for index, batch in enumerate(micro):
        sync = contextlib.nullcontext() if index == len(micro) - 1 else strategy.no_sync(wrapped)
        with sync:
            with autocast_context(config.precision, strategy.device):
                out = wrapped(batch, image_size=image_size)
            (out["loss_sum"] / max(1, supervised)).backward()
        loss_sum += float(out["loss_sum"].detach())
        tokens += out["tokens"]
        visual += out["visual_tokens"].tolist()
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
    optimizer.step()
    scheduler.step()
    loss_sum, supervised, tokens, samples, visual_sum = strategy.all_reduce_sum(
        [loss_sum, float(supervised), float(tokens), float(len(visual)), float(sum(visual))])
    elapsed = time.perf_counter() - began
    return {"loss": loss_sum / max(1.0, supervised), "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
            "tokens": int(tokens), "tokens_per_s": tokens / elapsed, "samples": int(samples),
            "visual_tokens_per_sample": visual_sum / max(1.0, samples), "skipped": dict(batches.skipped),
            "seconds": elapsed}


def _log(config: TrainConfig, strategy, record: dict, step: int) -> None:
    strategy.report(record)
    if not strategy.is_main:
        return
    os.makedirs(config.output_dir, exist_ok=True)
    with open(os.path.join(config.output_dir, "train_log.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if step % config.log_every == 0:
        print(f"[{record['stage']}] step {step} loss {record['loss']:.4f} lr {record['lr']:.2e} "
              f"tokens/s {record['tokens_per_s']:.0f} visual/sample {record['visual_tokens_per_sample']:.0f}",
              flush=True)
