"""``longvid train`` (the curriculum, one process or Ray Train) and ``longvid ask`` (answer a question
about a video with the training frame plan, optionally with PivotKV chunked prefill)."""

from __future__ import annotations

import json
import os
import sys
import time

from ..config import ConfigError, add_dataclass_arguments, build_config
from .config import TrainConfig, validate


def register(sub) -> None:
    p = sub.add_parser("train", help="train the bundled video LLM through the configured stages",
                       description="Run the stages of a YAML config (model, data, stages) in order; rerunning "
                       "the same command resumes from the latest checkpoint in --output-dir.")
    p.add_argument("--config", help="YAML file with the settings below (flags win)")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a keyword of the data factory (repeatable; VALUE is read as YAML)")
    add_dataclass_arguments(p, TrainConfig, skip={"stages", "data"})
    p.add_argument("--data.source", dest="data.source", help="module:factory of the data source")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("ask", help="answer a question about a video with a trained checkpoint")
    p.add_argument("checkpoint", help="a saved model folder, a checkpoint folder, or a training output dir")
    p.add_argument("video", help="a local video file")
    p.add_argument("question")
    p.add_argument("--stage", default="stage3", help="whose frame plan to use (default stage3: 64-512 frames)")
    p.add_argument("--max-frames", type=int, help="raise or lower the plan's upper frame bound (needles: 10000)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--no-dropout", action="store_true", help="prefill without progressive visual dropout")
    p.add_argument("--pivotkv", action="store_true", help="chunked prefill with PivotKV KV-cache compression")
    p.add_argument("--chunk-frames", type=int, default=32, help="PivotKV frames per chunk")
    p.add_argument("--max-input-length", type=int, default=32000, help="PivotKV: keep ratio = this / input length")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, or auto (bfloat16 on GPUs)")
    p.add_argument("--json", action="store_true", help="print the answer and timings as JSON")
    p.set_defaults(func=cmd_ask)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _data_options(pairs: list[str]) -> dict:
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--data-option expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def cmd_train(args) -> int:
    try:
        config = build_config(TrainConfig, args, args.config)
        config.data.options.update(_data_options(args.data_option))
        validate(config)
    except (ConfigError, OSError) as exc:
        print(f"longvid train: bad configuration: {exc}", file=sys.stderr)
        return 2
    _quiet_transformers()
    if config.num_workers > 0:
        from .ray_train import train_with_ray

        metrics = train_with_ray(config, config.num_workers, use_gpu=config.use_gpu)
        print(json.dumps(metrics))
        return 0
    from .trainer import train

    summary = train(config)
    last = summary.records[-1] if summary.records else {}
    print(json.dumps({"steps": len(summary.records), "last": last, "resumed_from": summary.resumed_from,
                      "checkpoints": summary.checkpoints[-1:]}))
    return 0


def resolve_model_dir(path: str) -> str:
    """A saved model folder itself, a trainer checkpoint (``model/`` inside), or a run directory."""
    from .trainer import latest_checkpoint
    from .videollm import MODEL_JSON

    for candidate in (path, os.path.join(path, "model")):
        if os.path.isfile(os.path.join(candidate, MODEL_JSON)):
            return candidate
    latest = latest_checkpoint(path)
    if latest and os.path.isfile(os.path.join(latest, "model", MODEL_JSON)):
        return os.path.join(latest, "model")
    raise FileNotFoundError(f"{path}: no saved model (expected {MODEL_JSON}, model/, or checkpoints/latest)")


def load_model(checkpoint: str, device: str = "auto", dtype: str = "auto"):
    """The model ``longvid ask`` answers with (also ``longvid needle eval``): a saved folder, checkpoint or
    run directory, on ``device`` (auto: CUDA when present), in ``dtype`` (auto: bfloat16 on GPUs)."""
    import torch

    from .videollm import VideoLLM

    place = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                         ("cpu" if device == "auto" else device))
    dtype = dtype if dtype != "auto" else ("bfloat16" if place.type == "cuda" else "float32")
    return VideoLLM.from_pretrained(resolve_model_dir(checkpoint), dtype=dtype).to(place).eval()


def ask_prompt(duration: float, num_frames: int, question: str) -> str:
    """What ``longvid ask`` puts after ``<image>``: the training time prompt, then the question."""
    from ..shards.sampling import time_prompt

    return f"{time_prompt(duration, num_frames)}\n{question}"


def cmd_ask(args) -> int:
    from ..shards.sampling import STAGES_BY_NAME, frame_indices
    from .pivotkv import PivotKVConfig
    from .video import VideoReadError, decode_frames, probe

    if args.stage not in STAGES_BY_NAME:
        print(f"longvid ask: unknown stage {args.stage!r}; one of {sorted(STAGES_BY_NAME)}", file=sys.stderr)
        return 2
    _quiet_transformers()
    try:
        model = load_model(args.checkpoint, args.device, args.dtype)
        stage = STAGES_BY_NAME[args.stage]
        vlen, fps = probe(args.video)
        hi = args.max_frames or stage.hi
        indices = frame_indices(vlen, fps, min(stage.lo, hi), hi)
        if not indices:
            raise VideoReadError(f"{args.video}: too short for a {model.config.hico.clip_frames}-frame clip")
        began = time.perf_counter()
        frames = decode_frames(args.video, indices, model.vision.image_size, fps)
        decoded = time.perf_counter()
    except (FileNotFoundError, VideoReadError) as exc:
        print(f"longvid ask: {exc}", file=sys.stderr)
        return 1
    prompt = ask_prompt(vlen / fps, len(indices), args.question)
    pivotkv = PivotKVConfig(args.chunk_frames, args.max_input_length) if args.pivotkv else None
    result = model.answer(frames, prompt, args.max_new_tokens, pivotkv=pivotkv, dropout=not args.no_dropout)
    result.update(frames=len(indices), decode_s=round(decoded - began, 3),
                  answer_s=round(time.perf_counter() - decoded, 3))
    print(json.dumps(result) if args.json else result["text"])
    return 0
