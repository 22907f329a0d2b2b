"""Captioning throughput: engines side by side, and the annotate pipeline with its CPU preparation
stage on and off, measured in one run.

  1. engines: the same prepared clips captioned by vLLM and by transformers, same model, same
     prompt, same batch: captions/s and output tokens/s, and their ratio;
  2. pipeline: `longvid annotate`'s Ray graph over an ingested dataset, with the preparation
     stage on (separate decode tasks feed the model actor) and off (the model actor decodes
     inline): captions/s and tokens/s in steady state (after the first result, so model loading
     is left out), wall time, and on a GPU the fraction of time the GPU was busy.

Without --model it builds the tiny random Idefics3 (SmolVLM architecture): on CPU that measures
the engines' and the pipeline's overheads, not a real model. On a GPU machine pass a real
checkpoint (e.g. --model HuggingFaceTB/SmolVLM2-2.2B-Instruct --device gpu).

    python bench/captioning.py --count 16 --seconds 30 --width 480 --height 270 --batch-size 8
    python bench/captioning.py --device gpu --model /models/SmolVLM2-2.2B-Instruct --backends vllm transformers

On a GPU machine without checkpoints or vLLM, a realistically shaped random model (SmolVLM2-2.2B's
published shape, random bf16 weights built on the spot) through transformers:

    python bench/captioning.py --device cuda --random-shape smolvlm2-2.2b --backends transformers \
        --pipeline-backends transformers --count 8 --seconds 30 --width 640 --height 360 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from longvid.annotators.captioners import (Captioner, CaptionerConfig, ModelConfig, SamplingConfig,  # noqa: E402
                                           make_engine, prepare_clips)
from longvid.annotators.clips import ClipConfig  # noqa: E402
from longvid.annotators.segment import SegmentConfig  # noqa: E402
from longvid.pipelines.annotate import AnnotateConfig, PipelineConfig, plan_parts, run_pipeline, video_table  # noqa: E402
from longvid.pipelines.ingest import IngestConfig, RayConfig, ShardConfig, run_ingest  # noqa: E402
from longvid.pipelines.manifest import write_manifest  # noqa: E402
from longvid.shards.index import read_clips_index  # noqa: E402
from longvid.shards.reader import read_record  # noqa: E402
from longvid.shards.storage import LocalStorage  # noqa: E402
from longvid.synthetic import write_video  # noqa: E402


class GpuSampler:
    """Samples `nvidia-smi` GPU utilisation every 100 ms; ``busy`` = share of samples above 0 %."""

    def __init__(self):
        self.samples: list[float] = []
        self.proc = None
        self.thread = None

    @staticmethod
    def available() -> bool:
        return shutil.which("nvidia-smi") is not None

    def __enter__(self):
        if self.available():
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "100"], stdout=subprocess.PIPE, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_busy_fraction": None, "gpu_util_mean": None}
        return {"gpu_busy_fraction": round(sum(s > 0 for s in self.samples) / len(self.samples), 3),
                "gpu_util_mean": round(sum(self.samples) / len(self.samples) / 100.0, 3)}


def make_dataset(workdir: str, count: int, seconds: float, width: int, height: int, fps: int) -> str:
    """Distinct generated videos ingested (segmented, planned, sharded) into ``workdir/dataset``
    (reused when a previous run with the same workdir built it)."""
    out = os.path.join(workdir, "dataset")
    if os.path.exists(os.path.join(out, "dataset.json")):
        return out
    src = os.path.join(workdir, "src")
    os.makedirs(src, exist_ok=True)
    paths = []
    for i in range(count):
        frames = int(seconds * fps)
        shot = max(10, int(fps * (3 + i % 4)))
        shots = [shot] * (frames // shot) + ([frames % shot] if frames % shot else [])
        shots[0] += i  # distinct content per file
        paths.append(write_video(os.path.join(src, f"bench-{i:03d}.mp4"), shots, fps=fps, width=width, height=height,
                                 gop=fps * 2).path)
    config = IngestConfig(segment=SegmentConfig(clips=ClipConfig(min_seconds=2.0, max_seconds=8.0)),
                          shards=ShardConfig(max_videos=4), ray=RayConfig(progress_bars=False))
    run_ingest(write_manifest(os.path.join(workdir, "manifest.jsonl"), paths), out, config, log_stream=open(os.devnull, "w"))
    return out


def model_config(args, backend: str) -> ModelConfig:
    on_cpu = args.device == "cpu"
    return ModelConfig(model=args.model, backend=backend, enforce_eager=on_cpu, engine_in_process=on_cpu,
                       kv_cache_gib=1 if on_cpu else 0, max_model_len=args.max_model_len, batch_size=args.batch_size,
                       dtype="auto", device="cpu" if on_cpu else "auto")


def captioner_config(args, backend: str) -> CaptionerConfig:
    # min = max new tokens: every caption has the same length, so engines and runs compare fairly
    sampling = SamplingConfig(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    return CaptionerConfig(model=model_config(args, backend), sampling=sampling, on_overlong="keep",
                           max_frames=args.frames, longest_edge=args.longest_edge)


def all_clips(dataset: str, args) -> list:
    """Every clip of the dataset prepared once on the CPU (the engines' shared input)."""
    storage = LocalStorage(dataset)
    clips = []
    for v in video_table(storage).to_pylist():
        record = read_record(storage, v["shard"], v["json_offset"], v["json_size"])
        media = storage.read_range(v["shard"], v["media_offset"], v["media_size"])
        clips += prepare_clips(v["key"], media, record["clips"], v["fps"], "stage2", args.frames, args.longest_edge)
    return clips


def engine_throughput_fresh(args, backend: str, dataset: str) -> dict:
    """:func:`engine_throughput` in a new process with ``--engine-threads`` OpenMP threads: an
    in-process vLLM binds the process's threads, which would skew whatever runs after it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    os.environ["OMP_NUM_THREADS"] = str(args.engine_threads)  # read by torch in the new process
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_engine_child, vars(args), backend, dataset).result()


def _engine_child(arg_dict: dict, backend: str, dataset: str) -> dict:
    args = argparse.Namespace(**arg_dict)
    return engine_throughput(args, backend, all_clips(dataset, args))


def engine_throughput(args, backend: str, clips: list) -> dict:
    engine = make_engine(model_config(args, backend), mm_limits={"image": args.frames})
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    captioner = Captioner(captioner_config(args, backend), engine=engine)
    captioner.caption(clips[: args.batch_size])  # warm-up
    t0 = time.perf_counter()
    done, tokens = 0, 0
    with GpuSampler() as gpu:
        for _ in range(args.repeats):
            for i in range(0, len(clips), args.batch_size):
                captions = captioner.caption(clips[i : i + args.batch_size])
                done += len(captions)
                tokens += sum(c.num_tokens for c in captions)
    wall = time.perf_counter() - t0
    engine.close()
    return {"backend": backend, "captions": done, "tokens": tokens, "seconds": round(wall, 3), "load_s": round(load_s, 1),
            "captions_per_s": round(done / wall, 2), "tokens_per_s": round(tokens / wall, 1), **gpu.summary()}


def pipeline_throughput(args, dataset: str, backend: str, prepare: bool) -> dict:
    """Steady state is measured from the model actor's own timestamps (each result carries the
    span its batch spent in the model): captions per second between the end of the first batch
    and the end of the last, and the share of that time the model was busy (not waiting for
    frames). Model loading and Ray start-up are outside it; ``wall_s`` has everything."""
    storage = LocalStorage(dataset)
    pipeline = PipelineConfig(prepare_stage=prepare, prepare_cpus=args.prepare_cpus, num_gpus=0 if args.device == "cpu" else 1,
                              num_cpus=1, pool_size=1, batch_size=args.batch_size, videos_per_part=4)
    config = AnnotateConfig(layer="bench", version="x", captioner=captioner_config(args, backend), pipeline=pipeline)
    parts = plan_parts([v for v in video_table(storage).to_pylist() if v["status"] == "ok"], pipeline.videos_per_part)
    batches: dict[tuple, list[int]] = {}  # model span -> [captions, tokens]
    t0 = time.perf_counter()
    with GpuSampler() as gpu:
        for out in run_pipeline(storage, config, "caption", parts):
            result = json.loads(out["result"])
            if result.get("model_span"):
                got = batches.setdefault(tuple(result["model_span"]), [0, 0])
                got[0] += len(result["rows"])
                got[1] += result["num_tokens"]
    wall = time.perf_counter() - t0
    spans = sorted(batches)
    first_end, last_end = spans[0][1], spans[-1][1]
    steady_s = max(1e-9, last_end - first_end)
    steady = [batches[s] for s in spans[1:]]
    busy = sum(max(0.0, min(e, last_end) - max(b, first_end)) for b, e in spans[1:]) / steady_s
    return {"backend": backend, "prepare_stage": prepare, "captions": sum(c for c, _ in batches.values()),
            "tokens": sum(t for _, t in batches.values()), "batches": len(spans), "wall_s": round(wall, 2),
            "steady_s": round(steady_s, 2), "captions_per_s": round(sum(c for c, _ in steady) / steady_s, 2),
            "tokens_per_s": round(sum(t for _, t in steady) / steady_s, 1), "model_busy_fraction": round(busy, 3),
            **gpu.summary()}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=4, help="generated videos")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each video")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=180)
    ap.add_argument("--model", default="", help="checkpoint (hub id or path); default: a tiny random Idefics3")
    ap.add_argument("--device", choices=("auto", "cpu", "gpu", "cuda"), default="auto", help="cuda = gpu")
    ap.add_argument("--random-shape", default="", help="random weights of a published shape instead of --model "
                    "(smolvlm2-2.2b); the GPU figure without a checkpoint")
    ap.add_argument("--shape-layers", type=int, default=0,
                    help="override the shape's text and vision layer counts (a quick CPU smoke run of the path)")
    ap.add_argument("--backends", nargs="+", default=["vllm", "transformers"])
    ap.add_argument("--pipeline-backends", nargs="+", default=["vllm", "transformers"],
                    help="backends of the prepare on/off pipeline runs")
    ap.add_argument("--tokens", type=int, default=16, help="output tokens per caption (forced, for fair counts)")
    ap.add_argument("--frames", type=int, default=8, help="frames per clip")
    ap.add_argument("--longest-edge", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=16, help="clips per model call")
    ap.add_argument("--repeats", type=int, default=2, help="passes over the clips in the engine measurement")
    ap.add_argument("--prepare-cpus", type=float, default=0.5)
    ap.add_argument("--engine-threads", type=int, default=1,
                    help="CPU threads of the engine measurement (1 = what a Ray actor with num_cpus=1 gets)")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--ray-cpus", type=int, default=4, help="logical CPUs of the local Ray (more than cores is fine)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    import torch

    if args.device == "auto":
        args.device = "gpu" if torch.cuda.is_available() else "cpu"
    args.device = "gpu" if args.device == "cuda" else args.device
    workdir = args.workdir or tempfile.mkdtemp(prefix="lv-capbench-")
    os.makedirs(workdir, exist_ok=True)
    if args.random_shape:
        from dataclasses import replace

        from longvid.annotators.tiny_models import SHAPES, build_tiny_idefics3

        shape = SHAPES[args.random_shape]
        if args.shape_layers:
            shape = replace(shape, num_layers=args.shape_layers, vision_layers=args.shape_layers)
        args.model = os.path.join(workdir, f"random-{args.random_shape}-{args.shape_layers or 'full'}")
        if not os.path.exists(os.path.join(args.model, "config.json")):
            build_tiny_idefics3(args.model, shape, dtype="bfloat16")
        args.longest_edge = shape.image_size
    if not args.model:
        from longvid.annotators.tiny_models import build_tiny_idefics3

        args.model = os.path.join(workdir, "tiny-idefics3")
        if not os.path.exists(os.path.join(args.model, "config.json")):
            build_tiny_idefics3(args.model)
    os.environ["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.pathsep + os.environ.get("PYTHONPATH", "")
    import ray

    ray.init(address="local", num_cpus=args.ray_cpus, object_store_memory=512 << 20, include_dashboard=False,
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"device: {args.device}" + ("" if args.device == "gpu" else " (no GPU here: GPU busy fraction not measured)"))
    t0 = time.perf_counter()
    dataset = make_dataset(workdir, args.count, args.seconds, args.width, args.height, fps=25)
    num_clips = read_clips_index(LocalStorage(dataset)).num_rows
    print(f"dataset: {args.count} videos x {args.seconds:.0f} s at {args.width}x{args.height}, {num_clips} clips "
          f"({time.perf_counter() - t0:.0f} s to build); model {args.model}")
    results = {"engines": [], "pipeline": [], "args": vars(args)}
    for backend in args.backends:
        r = engine_throughput_fresh(args, backend, dataset)
        results["engines"].append(r)
        print(f"engine {backend:12s} {r['captions_per_s']:8.2f} captions/s {r['tokens_per_s']:9.1f} tokens/s "
              f"({r['captions']} captions in {r['seconds']} s; load {r['load_s']} s; GPU busy {r['gpu_busy_fraction']})")
    if len(results["engines"]) == 2:
        a, b = results["engines"]
        print(f"ratio {a['backend']}/{b['backend']}: {ratio(a['captions_per_s'], b['captions_per_s'])} captions/s")
    for backend in args.pipeline_backends:
        pair = []
        for prepare in (True, False):
            r = pipeline_throughput(args, dataset, backend, prepare)
            results["pipeline"].append(r)
            pair.append(r)
            print(f"pipeline {backend:12s} prepare={'on ' if prepare else 'off'} {r['captions_per_s']:8.2f} captions/s "
                  f"{r['tokens_per_s']:9.1f} tokens/s in steady state ({r['batches']} batches over {r['steady_s']} s), "
                  f"model busy {r['model_busy_fraction']:.0%}, GPU busy {r['gpu_busy_fraction']}, wall {r['wall_s']} s")
        on, off = pair
        print(f"ratio {backend} prepare on/off: {ratio(on['captions_per_s'], off['captions_per_s'])} captions/s (steady), "
              f"{ratio(off['wall_s'], on['wall_s'])} wall")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
