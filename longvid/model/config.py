"""Typed configuration of the bundled video LLM and its trainer (loaded from YAML by longvid.config).

Only plain data lives here: no torch, no loading. Defaults follow SEEDS.md §2-§3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError, from_dict, load_yaml


@dataclass
class VisionConfig:
    name_or_path: str = ""  # HF hub id or local folder of a CLIP/SigLIP/ViT vision tower (or a full CLIP/SigLIP model)
    kind: str = "image"  # image: the tower sees one frame at a time; video: it sees a whole 4-frame clip
    feature_layer: int = -2  # hidden state fed to HiCo; -2 is the second-to-last layer, as the paper's UMT
    image_size: int = 0  # pixels per side fed to the tower; 0 keeps the tower's own (stages may override)
    mean: list[float] = field(default_factory=list)  # pixel normalisation mean; empty: the family's (CLIP or 0.5)
    std: list[float] = field(default_factory=list)  # pixel normalisation std; empty: the family's
    frames_per_batch: int = 64  # frames through the tower at once: bounds activation memory on 10k-frame inputs


@dataclass
class HiCoConfig:
    clip_frames: int = 4  # frames per clip: the unit the tower and the merging work on
    tokens_per_frame: int = 16  # tokens left per frame after bipartite merging (64 per 4-frame clip)
    merge: bool = True  # clip-level merging on; off feeds every patch token (the "HiCo off" baseline)
    merge_metric: str = "keys"  # keys: cosine of head-averaged attention keys (ToMe); features: of the features
    dropout: bool = True  # progressive visual dropout inside the LLM (training and prefill)
    dropout_layers: list[int] = field(default_factory=lambda: [4, 18])  # drop before these decoder layers
    dropout_ratios: list[float] = field(default_factory=lambda: [0.75, 0.25])  # kept share of the ORIGINAL visual tokens
    dropout_modes: list[str] = field(default_factory=lambda: ["uniform", "attention"])  # uniform: evenly spaced; attention: top-k by text attention


@dataclass
class LLMConfig:
    name_or_path: str = ""  # HF hub id or local folder of a causal LM of the Llama/Qwen2 family (Qwen2 by default)
    attn_implementation: str = "sdpa"  # sdpa runs everywhere; flash kernels come through it on GPUs
    gradient_checkpointing: bool = False  # recompute decoder layers in backward: needed at 32k tokens on one GPU


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    hico: HiCoConfig = field(default_factory=HiCoConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    checkpoint: str = ""  # a saved VideoLLM folder to start from (overrides the two names above)
    system_prompt: str = "You are a helpful assistant."  # the ChatML system turn of every sample


@dataclass
class StageConfig:
    name: str = "stage3"  # which stage this is (also picks the frame plan of shards.sampling)
    trainable: list[str] = field(default_factory=lambda: ["all"])  # any of vision, projector, llm, or all
    lr: float = 1e-5  # peak learning rate of the projector and the LLM
    vision_lr: float = 2e-6  # peak learning rate of the vision tower (the paper's 2e-6)
    frames_lo: int = 64  # dynamic_fps1 lower frame bound for this stage
    frames_hi: int = 512  # upper frame bound; samples with more frames are skipped
    max_length: int = 32768  # LLM tokens per sample (visual + text); longer samples are skipped
    image_size: int = 0  # tower input size in this stage; 0 keeps the model's (stage 4 uses 448)
    steps: int = 1000  # optimiser steps in this stage
    warmup_ratio: float = 0.03  # share of the steps spent in linear warm-up
    min_lr_ratio: float = 0.0  # cosine floor as a share of the peak


def default_stages() -> list[StageConfig]:
    """The four stages of SEEDS.md §3."""
    return [
        StageConfig("stage1", ["projector"], 1e-3, 0.0, 4, 4, 8192),
        StageConfig("stage2", ["all"], 1e-5, 2e-6, 1, 8, 32768),
        StageConfig("stage3", ["all"], 1e-5, 2e-6, 64, 512, 32768),
        StageConfig("stage4", ["vision", "projector"], 1e-5, 1e-5, 64, 512, 32768, image_size=448),
    ]


TOY_SOURCE = "toy"  # data.source alias of longvid.model.toydata:synthetic_captions (tests, smoke runs)


@dataclass
class DataConfig:
    source: str = ""  # module:factory(stage, rank, world_size, seed, **options) returning a DataSource (only longvid.* modules), or "toy"; required: no silent fallback to toy data
    options: dict = field(default_factory=dict)  # keyword arguments of the factory (dataset path, mix, ...)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: list[StageConfig] = field(default_factory=default_stages)  # the curriculum, run in order
    run_stages: list[str] = field(default_factory=list)  # names of the stages to run; empty runs all
    output_dir: str = "runs/train"  # checkpoints and train_log.jsonl go here
    seed: int = 0  # model init, data order and any sampling
    micro_batch_tokens: int = 32768  # token budget of a micro-batch: samples x longest sample stays under it
    max_micro_batch: int = 16  # at most this many samples per micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    weight_decay: float = 0.0  # LLaVA-style recipes train without decay
    max_grad_norm: float = 1.0  # gradient clipping
    precision: str = "auto"  # auto: bf16 autocast on GPUs that have it, else fp32; or bf16 / fp32
    log_every: int = 10  # optimiser steps between log lines
    save_every: int = 500  # optimiser steps between checkpoints (and one at the end of each stage)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    resume: bool = True  # continue from output_dir's latest checkpoint when there is one
    num_workers: int = 0  # 0: one process; N: Ray Train with N workers (same training code)
    use_gpu: bool = False  # Ray Train workers ask for one GPU each


def load_train_config(path: str | None, overrides: dict | None = None) -> TrainConfig:
    data = load_yaml(path) if path else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    config = from_dict(TrainConfig, data, where=path or "config")
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    hico = config.model.hico
    if not (len(hico.dropout_layers) == len(hico.dropout_ratios) == len(hico.dropout_modes)):
        raise ConfigError("hico.dropout_layers, dropout_ratios and dropout_modes must have the same length")
    if sorted(hico.dropout_layers) != list(hico.dropout_layers):
        raise ConfigError("hico.dropout_layers must be increasing")
    for mode in hico.dropout_modes:
        if mode not in ("uniform", "attention"):
            raise ConfigError(f"hico.dropout_modes: unknown mode {mode!r} (uniform or attention)")
    names = [s.name for s in config.stages]
    for name in config.run_stages:
        if name not in names:
            raise ConfigError(f"run_stages: no stage named {name!r}; stages are {names}")
    for stage in config.stages:
        bad = set(stage.trainable) - {"all", "vision", "projector", "llm"}
        if bad:
            raise ConfigError(f"stage {stage.name}: unknown trainable part(s) {sorted(bad)}")
    if config.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision must be auto, bf16 or fp32, not {config.precision!r}")
    if not config.data.source:
        raise ConfigError("data.source is not set: name the training data, e.g. --data.source "
                          "longvid.shards.stream:training_source (a dataset), or --data.source toy (generated captions, "
                          "for a smoke test)")
    if config.data.source != TOY_SOURCE and not config.data.source.startswith("longvid."):
        raise ConfigError(f"data.source must name a longvid.* module, got {config.data.source!r}")
