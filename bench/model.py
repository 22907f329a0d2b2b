"""The bundled video LLM with HiCo on and off, measured in the same run (random weights).

  1. training: tokens/s and peak memory of forward + backward + AdamW on one sample of
     --train-frames frames, HiCo on (merging + dropout) and off;
  2. prefill (what `longvid ask` does before its first token: vision tower, merging, projector,
     LLM prefill with KV cache): seconds and peak memory at each --frames count, HiCo on and off.
Each measurement runs in its own process, so peak memory is that measurement's own (CUDA: peak
allocated; CPU: peak RSS, which includes the weights). A run that runs out of memory says OOM.
Ratios print HiCo-off / HiCo-on.

    python bench/model.py --device cpu --shape small --frames 64 256 1024          # CPU, reduced
    python bench/model.py --device cuda --shape realistic --frames 512 2048 10000  # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name → (vision tower, LLM, dropout layers). "realistic": UMT-L/16-like clip tower (VideoMAE
# layout: 24 layers, width 1024, 4-frame clips, 224 px, 784 tokens per clip) + Qwen2-7B shape;
# "realistic-1.5b" the same tower + Qwen2-1.5B (a 7B full fine-tune does not fit one GPU's memory).
SHAPES = {
    "small": (dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768, image_size=112),
              dict(hidden_size=256, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=688, vocab_size=4096), [1, 5]),
    "realistic": (dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       image_size=224),
                  dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=152064), [4, 18]),
    "realistic-1.5b": (dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                            image_size=224),
                       dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                            intermediate_size=8960, vocab_size=151936), [4, 18]),
}


def build_model(shape: str, device, dtype, hico: bool, tokenizer_dir: str):
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, VideoMAEConfig, VideoMAEModel

    from longvid.model.config import HiCoConfig, ModelConfig, VisionConfig
    from longvid.model.hico import Projector
    from longvid.model.videollm import VideoLLM
    from longvid.model.vision import VisionEncoder

    vision_shape, llm_shape, dropout_layers = SHAPES[shape]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = ModelConfig(vision=VisionConfig(kind="video", frames_per_batch=64),
                         hico=HiCoConfig(merge=hico, dropout=hico, dropout_layers=dropout_layers))
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            tower = VideoMAEModel(VideoMAEConfig(patch_size=16, num_frames=4, tubelet_size=1, **vision_shape))
            lm = Qwen2ForCausalLM(Qwen2Config(max_position_embeddings=2_000_000, tie_word_embeddings=False,
                                              **llm_shape))
            lm.config._attn_implementation = "sdpa"
            vision = VisionEncoder(tower, config.vision, config.hico)
            projector = Projector(vision.width, lm.config.hidden_size)
    finally:
        torch.set_default_dtype(previous)
    return VideoLLM(config, vision, projector, lm, tokenizer).to(device)


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def run_prefill(spec: dict, model, device) -> dict:
    import torch

    size = model.vision.image_size
    frames = torch.randint(0, 255, (spec["frames"], size, size, 3), dtype=torch.uint8)
    sync(device)
    began = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        result = model.answer(frames, "What happens in the video?", max_new_tokens=1, dropout=spec["hico"])
    sync(device)
    return {"seconds": time.perf_counter() - began, "llm_tokens": result["prompt_tokens"],
            "kv_cache_mb": result["kv_cache_bytes"] / 2**20}


def run_train(spec: dict, model, device) -> dict:
    import torch

    from longvid.model.toydata import SyntheticCaptions

    model.train()
    frames = spec["frames"]  # a virtual video long enough that the plan gives exactly this many frames
    sample = next(iter(SyntheticCaptions(frames, frames, size=model.vision.image_size,
                                         seconds=(frames + 1.0, frames + 2.0))))
    prepared = model.prepare(sample)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times = []
    for step in range(spec["warmup"] + spec["steps"]):
        sync(device)
        began = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model([prepared])
        (out["loss_sum"] / out["supervised"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if step >= spec["warmup"]:
            times.append(time.perf_counter() - began)
    per_step = sum(times) / len(times)
    return {"seconds_per_step": per_step, "llm_tokens": out["tokens"], "tokens_per_s": out["tokens"] / per_step}


def worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"]) if spec["threads"] else None
    device = torch.device(spec["device"])
    dtype = torch.bfloat16 if spec["dtype"] == "bfloat16" else torch.float32
    model = build_model(spec["shape"], device, dtype, spec["hico"], spec["tokenizer"])
    if spec["task"] == "train" and spec["gradient_checkpointing"]:
        model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model_mb = peak_memory_mb(device)
    try:
        result = (run_train if spec["task"] == "train" else run_prefill)(spec, model, device)
    except torch.cuda.OutOfMemoryError:
        result = {"oom": True}
    result.update(model_mb=model_mb, peak_mb=peak_memory_mb(device))
    print("RESULT " + json.dumps(result), flush=True)


def measure(spec: dict, timeout: float) -> dict:
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    return {"oom": True} if proc.returncode in (-9, 137) or "memory" in tail[0].lower() else {"error": tail[0]}


def cell(result: dict, key: str, fmt: str) -> str:
    if result.get("oom"):
        return "OOM"
    if "error" in result:
        return "error"
    return format(result[key], fmt)


def ratio(off: dict, on: dict, key: str) -> str:
    if key in off and key in on and on[key]:
        return f"{off[key] / on[key]:.2f}x"
    return "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument("--train-shape", help="model shape for the training run (default: --shape; "
                    "realistic-1.5b is the largest that trains on one 80 GB GPU)")
    ap.add_argument("--dtype", default=None, help="weights: bfloat16 (default on cuda) or float32 (default on cpu)")
    ap.add_argument("--frames", type=int, nargs="+", default=[64, 256, 1024], help="prefill frame counts")
    ap.add_argument("--train-frames", type=int, default=64, help="frames of the training sample")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per measurement")
    ap.add_argument("--json", help="also write all results to this file")
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    from longvid.model.tiny import train_tokenizer

    tokenizer_dir = tempfile.mkdtemp(prefix="bench-tok-")
    train_tokenizer(tokenizer_dir)
    base = {"device": args.device, "dtype": args.dtype or ("bfloat16" if args.device == "cuda" else "float32"),
            "tokenizer": tokenizer_dir, "threads": args.threads, "gradient_checkpointing": args.gradient_checkpointing}
    results = {"args": vars(args), "train": {}, "prefill": {}}
    train_shape = args.train_shape or args.shape
    print(f"device {args.device}, prefill shape {args.shape}, train shape {train_shape}, weights {base['dtype']}")
    print(f"\ntraining: one sample of {args.train_frames} frames, {args.train_steps} timed steps")
    print(f"{'HiCo':>5} {'LLM tokens':>10} {'s/step':>8} {'tokens/s':>9} {'peak MB':>9}")
    for hico in (True, False):
        spec = dict(base, task="train", shape=train_shape, hico=hico, frames=args.train_frames,
                    steps=args.train_steps, warmup=1)
        r = results["train"]["on" if hico else "off"] = measure(spec, args.timeout)
        print(f"{'on' if hico else 'off':>5} {cell(r, 'llm_tokens', 'd'):>10} {cell(r, 'seconds_per_step', '.3f'):>8} "
              f"{cell(r, 'tokens_per_s', '.0f'):>9} {cell(r, 'peak_mb', '.0f'):>9}", flush=True)
    on, off = results["train"]["on"], results["train"]["off"]
    print(f"HiCo off / on: seconds per step {ratio(off, on, 'seconds_per_step')}, peak memory {ratio(off, on, 'peak_mb')}")
    print("\nprefill (vision + merging + projector + LLM prefill with KV cache, first token)")
    print(f"{'frames':>6} {'HiCo':>5} {'LLM tokens':>10} {'seconds':>8} {'peak MB':>9} {'KV MB':>8}")
    for frames in args.frames:
        row = {}
        for hico in (True, False):
            spec = dict(base, task="prefill", shape=args.shape, hico=hico, frames=frames)
            r = row["on" if hico else "off"] = measure(spec, args.timeout)
            print(f"{frames:>6} {'on' if hico else 'off':>5} {cell(r, 'llm_tokens', 'd'):>10} "
                  f"{cell(r, 'seconds', '.2f'):>8} {cell(r, 'peak_mb', '.0f'):>9} {cell(r, 'kv_cache_mb', '.0f'):>8}",
                  flush=True)
        results["prefill"][frames] = row
        print(f"{'':>6} off/on: time {ratio(row['off'], row['on'], 'seconds')}, "
              f"peak memory {ratio(row['off'], row['on'], 'peak_mb')}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
