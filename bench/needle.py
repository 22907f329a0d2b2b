"""Needle-in-a-video-haystack eval throughput and memory, HiCo on and off, measured in the same run.

Generates a dataset long enough for the largest haystack (low-rate H.264 videos, or takes
--dataset), builds a needle benchmark (one single-hop item per length at depth 0.5, plus one
multi-hop item per length with --multi), then runs `longvid needle eval`'s code path on a random
model, each setting in its own process so peak memory is its own (CUDA: peak allocated; CPU: peak
RSS, weights included). Prints frames/s of the model step (decode excluded), seconds per item and
peak memory per haystack length, and HiCo-off / HiCo-on ratios. An OOM is reported as OOM.

    python bench/needle.py --device cpu --shape tiny --frames 64 128 256                   # CPU
    python bench/needle.py --device cuda --shape realistic --frames 1000 5000 10000       # one 80 GB GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def make_dataset(root: str, seconds: int, fps: int = 2, per_video: int = 600) -> None:
    """Videos of ``per_video`` seconds at ``fps`` (shots of 20 s) until ``seconds`` of video exist."""
    from longvid.synthetic import write_known_cut_dataset, write_video

    os.makedirs(root + "-src", exist_ok=True)
    videos, left, number = [], seconds, 0
    while left > 0:
        length = min(per_video, left) + 2
        path = os.path.join(root + "-src", f"v{number}.mp4")
        shots = [20 * fps] * (length // 20) + ([length % 20 * fps] if length % 20 else [])
        truth = write_video(path, shots, fps=fps, width=128, height=96, gop=4 * fps)
        videos.append((path, truth.cuts))
        left, number = left - (length - 2), number + 1
    write_known_cut_dataset(root, videos, per_shard=8)


def build_model(spec: dict):
    import torch

    if spec["shape"] == "tiny":
        from longvid.model.tiny import tiny_model_config
        from longvid.model.videollm import VideoLLM

        model = VideoLLM.from_config(tiny_model_config(tempfile.mkdtemp(prefix="needle-tiny-")), seed=0)
        model = model.to(torch.device(spec["device"]))
    else:
        from model import build_model as build_shaped  # bench/model.py's shapes (random weights)

        dtype = torch.bfloat16 if spec["dtype"] == "bfloat16" else torch.float32
        model = build_shaped(spec["shape"], torch.device(spec["device"]), dtype, True, spec["tokenizer"])
    return model.eval()


def worker(spec: dict) -> None:
    import dataclasses

    import torch

    from longvid.needle import NeedleEvalConfig, evaluate

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    model = build_model(spec)
    if not spec["hico"]:
        model.set_hico(dataclasses.replace(model.config.hico, merge=False, dropout=False))
    config = NeedleEvalConfig(model=f"random-{spec['shape']}", out=spec["out"], hico=spec["hico"],
                              max_new_tokens=spec["max_new_tokens"], device=spec["device"])
    try:
        results = evaluate(spec["bench"], config, model=model, log=lambda m: print(m, file=sys.stderr, flush=True))
    except torch.cuda.OutOfMemoryError:
        print("RESULT " + json.dumps({"oom": True}), flush=True)
        return
    with open(os.path.join(spec["out"], "scored.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    print("RESULT " + json.dumps({"results": results, "rows": rows}), flush=True)


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


def per_length(result: dict, items: dict) -> dict:
    """frames/s of the model step, seconds per item and peak MB, per haystack length."""
    out: dict[int, dict] = {}
    for row in result.get("rows", []):
        length = items[row["id"]]["haystack_frames"]
        cell = out.setdefault(length, {"frames": 0, "seconds": 0.0, "items": 0, "peak_mb": 0.0})
        cell["frames"] += row["frames_asked"]
        cell["seconds"] += row["model_s"]
        cell["items"] += 1
        cell["peak_mb"] = max(cell["peak_mb"], row["peak_mb"])
    for cell in out.values():
        cell["frames_per_s"] = cell["frames"] / cell["seconds"] if cell["seconds"] else 0.0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", default="tiny", help="tiny (tests' model), or a bench/model.py shape: small, realistic")
    ap.add_argument("--dtype", default=None, help="bfloat16 (default on cuda) or float32")
    ap.add_argument("--frames", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--multi", action="store_true", help="add one multi-hop item per length")
    ap.add_argument("--dataset", help="an ingested dataset to use instead of generated videos")
    ap.add_argument("--work", help="folder for the generated dataset and benchmark (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=1, help="1: time the prefill, not the junk a random model generates")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", help="also write all results here")
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    from longvid.model.tiny import train_tokenizer
    from longvid.needle import NeedleBuildConfig, build

    work = args.work or tempfile.mkdtemp(prefix="bench-needle-")
    dataset = args.dataset or os.path.join(work, "dataset")
    if not args.dataset and not os.path.exists(os.path.join(dataset, "dataset.json")):
        began = time.perf_counter()
        make_dataset(dataset, max(args.frames) + 10)
        print(f"generated {max(args.frames) + 10} s of video in {time.perf_counter() - began:.1f} s")
    bench = os.path.join(work, "bench")
    build(dataset, bench, NeedleBuildConfig(frames=sorted(args.frames), depths=[0.5], multi_per_length=int(args.multi)),
          log=lambda m: None)
    with open(os.path.join(bench, "items.jsonl")) as f:
        items = {r["id"]: r for r in map(json.loads, f)}
    tokenizer = tempfile.mkdtemp(prefix="bench-tok-")
    train_tokenizer(tokenizer)
    base = {"device": args.device, "shape": args.shape, "bench": bench, "threads": args.threads,
            "dtype": args.dtype or ("bfloat16" if args.device == "cuda" else "float32"), "tokenizer": tokenizer,
            "max_new_tokens": args.max_new_tokens}
    print(f"device {args.device}, shape {args.shape}, lengths {sorted(args.frames)}, {len(items)} items")
    table = {}
    for hico in (True, False):
        out = os.path.join(work, f"eval-{'on' if hico else 'off'}-{int(time.time() * 1000)}")
        result = measure(dict(base, hico=hico, out=out), args.timeout)
        table["on" if hico else "off"] = per_length(result, items) if "rows" in result else result
    print(f"{'frames':>6} {'HiCo':>5} {'frames/s':>9} {'s/item':>8} {'peak MB':>9}")
    for length in sorted(args.frames):
        for setting in ("on", "off"):
            cell = table[setting].get(length) if isinstance(table[setting], dict) else None
            if not cell or "frames_per_s" not in cell:
                print(f"{length:>6} {setting:>5} {json.dumps(table[setting])[:40]:>28}")
                continue
            print(f"{length:>6} {setting:>5} {cell['frames_per_s']:>9.0f} {cell['seconds'] / cell['items']:>8.2f} "
                  f"{cell['peak_mb']:>9.0f}")
        on, off = table["on"].get(length, {}), table["off"].get(length, {})
        if on.get("frames_per_s") and off.get("frames_per_s"):
            print(f"{'':>6} off/on: time {on['frames_per_s'] / off['frames_per_s']:.2f}x, "
                  f"peak memory {off['peak_mb'] / on['peak_mb']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "table": {k: {str(n): c for n, c in v.items()} if isinstance(v, dict) else v
                                                      for k, v in table.items()}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
