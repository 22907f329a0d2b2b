"""Per-core decode cost of real-looking 720p/1080p H.264 against the project's generated test video.

The sizing plan (cluster/SIZING.md) scales measured ingestion throughput to the real corpus with
the ratios printed here. Never used by the engine; writes only under --out.

For each clip it measures PyAV decode-only on one thread (the physical floor: every frame must be
decoded) and the ingest ``segment`` stage (decode + 48x27 thumbnails + shot detector + keyframe
distances) with the ``segment:`` settings of --config (the cluster's, by default), once as
configured and once with ``decode.skip_loop_filter`` on. Figures are video-seconds per CPU-second
(process CPU time, so other load on the machine matters less than in wall time).

    python bench/decode_scale.py --seconds 30 --repeats 3 --out bench/out/decode_scale
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import av
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses  # noqa: E402

from longvid.annotators.probe import probe_file  # noqa: E402
from longvid.annotators.segment import SegmentConfig, segment_video  # noqa: E402
from longvid.config import from_dict, load_yaml  # noqa: E402
from longvid.synthetic import write_video  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process, FFmpeg's own threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Multi-octave smooth noise (uint8 RGB): detail at every scale, like a filmed scene."""
    out = np.zeros((height, width, 3), np.float32)
    for octave, weight in ((8, 90.0), (32, 45.0), (128, 25.0), (512, 12.0)):
        small = rng.normal(0, 1, size=(max(2, height * octave // width), octave, 3)).astype(np.float32)
        ys = np.linspace(0, small.shape[0] - 1, height).astype(int)
        xs = np.linspace(0, small.shape[1] - 1, width).astype(int)
        out += weight * small[ys][:, xs]
    return np.clip(out + 128, 0, 255).astype(np.uint8)


def write_realistic(path: str, width: int, height: int, fps: int, seconds: float, bitrate: int, seed: int = 0) -> None:
    """Camera pans over textured scenes with sensor grain and a cut every 5 s, encoded by libx264
    at a fixed average bitrate (the quantity that drives H.264 entropy-decoding cost)."""
    rng = np.random.default_rng(seed)
    container = av.open(path, mode="w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.bit_rate = bitrate
    stream.codec_context.gop_size = 2 * fps  # a keyframe every 2 s, as streaming sites encode
    stream.options = {"preset": "faster", "profile": "high"}
    grain = [rng.normal(0, 4, size=(height, width, 3)).astype(np.int16) for _ in range(8)]
    frames = int(seconds * fps)
    scene_frames = 5 * fps
    for t in range(frames):
        if t % scene_frames == 0:
            big = texture(rng, height + height // 2, width + width // 2)
            dx, dy = rng.uniform(-2, 2, size=2) * width / 640
        s = t % scene_frames
        x = int(np.clip(width // 4 + dx * s, 0, width // 2))
        y = int(np.clip(height // 4 + dy * s, 0, height // 2))
        img = np.clip(big[y:y + height, x:x + width].astype(np.int16) + grain[t % len(grain)], 0, 255).astype(np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def decode_only(path: str) -> tuple[int, float, float]:
    """(frames, CPU s, wall s) of decoding every frame on one thread, pixels left in FFmpeg."""
    c0, w0 = cpu_seconds(), time.perf_counter()
    frames = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for _ in container.decode(stream):
            frames += 1
    return frames, cpu_seconds() - c0, time.perf_counter() - w0


def segment_stage(path: str, config: SegmentConfig) -> tuple[int, float, float]:
    """(frames, CPU s, wall s) of the ingest segment stage on the file's bytes."""
    with open(path, "rb") as f:
        data = f.read()
    probe = probe_file(path)
    c0, w0 = cpu_seconds(), time.perf_counter()
    result = segment_video(data, probe, "bench", config)
    return result["num_frames"], cpu_seconds() - c0, time.perf_counter() - w0


def fastest(runs: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    return min(runs, key=lambda r: r[1])  # other processes on a shared machine only ever slow a run down


def measure(name: str, path: str, fps: int, repeats: int, config: SegmentConfig) -> dict:
    size = os.path.getsize(path)
    no_deblock = dataclasses.replace(config, decode=dataclasses.replace(config.decode, skip_loop_filter=True))
    decode = fastest([decode_only(path) for _ in range(repeats)])
    segment = fastest([segment_stage(path, config) for _ in range(repeats)])
    skip = fastest([segment_stage(path, no_deblock) for _ in range(repeats)])
    frames = decode[0]
    seconds = frames / fps
    row = {
        "clip": name, "frames": frames, "video_s": seconds, "mbit_per_s": size * 8 / seconds / 1e6,
        "decode_cpu_s": decode[1], "decode_wall_s": decode[2],
        "segment_cpu_s": segment[1], "segment_wall_s": segment[2], "segment_skip_deblock_cpu_s": skip[1],
        "decode_fps_per_core": frames / decode[1],
        "decode_video_s_per_core_s": seconds / decode[1],
        "segment_video_s_per_core_s": seconds / segment[1],
        "segment_skip_deblock_video_s_per_core_s": seconds / skip[1],
    }
    row["segment_vs_decode"] = row["segment_video_s_per_core_s"] / row["decode_video_s_per_core_s"]
    return row


def write_ingest_set(folder: str, count: int, seconds: float) -> None:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"real-like-720p30-{i:02d}.mp4")
        if not os.path.exists(path):
            write_realistic(path, 1280, 720, 30, seconds, 2_500_000, seed=100 + i)
        paths.append(path)
    print("end-to-end on these clips:  python bench/ingest.py --videos " + " ".join(paths), file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each clip")
    parser.add_argument("--repeats", type=int, default=2, help="runs per clip; the fastest CPU time counts")
    parser.add_argument("--out", default="bench/out/decode_scale", help="folder for the clips and results.json")
    parser.add_argument("--config", default="cluster/longvid.yaml",
                        help="ingest config whose segment: section is measured (default: the cluster's)")
    parser.add_argument("--ingest-set", type=int, default=0, metavar="N",
                        help="also write N distinct real-like 720p clips under OUT/ingest-set/ for "
                             "`python bench/ingest.py --videos ...` (end-to-end ingestion of real-like video)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    config = from_dict(SegmentConfig, load_yaml(args.config).get("segment", {}), f"{args.config}: segment")
    if args.ingest_set:
        write_ingest_set(os.path.join(args.out, "ingest-set"), args.ingest_set, args.seconds)
    clips = {  # name → (writer, fps)
        "generated-720p25": (lambda p: write_video(p, [int(args.seconds * 25 / 4)] * 4, fps=25, width=1280, height=720), 25),
        "real-like-720p30-2.5M": (lambda p: write_realistic(p, 1280, 720, 30, args.seconds, 2_500_000), 30),
        "real-like-1080p30-5M": (lambda p: write_realistic(p, 1920, 1080, 30, args.seconds, 5_000_000), 30),
    }
    rows = []
    for name, (writer, fps) in clips.items():
        path = os.path.join(args.out, f"{name}.mp4")
        if not os.path.exists(path):
            t0 = time.perf_counter()
            writer(path)
            print(f"[bench] encoded {name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rows.append(measure(name, path, fps, args.repeats, config))
    print(f"segment settings from {args.config}: detector={config.detector}, decode.threads={config.decode.threads}, "
          f"skip_loop_filter={config.decode.skip_loop_filter}")
    print(f"{'clip':24} {'Mbit/s':>7} {'decode fps/core':>16} {'decode vs/cs':>13} {'segment vs/cs':>14} "
          f"{'seg/dec':>8} {'no-deblock vs/cs':>17}")
    for r in rows:
        print(f"{r['clip']:24} {r['mbit_per_s']:7.2f} {r['decode_fps_per_core']:16.1f} "
              f"{r['decode_video_s_per_core_s']:13.2f} {r['segment_video_s_per_core_s']:14.2f} {r['segment_vs_decode']:8.2f} "
              f"{r['segment_skip_deblock_video_s_per_core_s']:17.2f}")
    base = rows[0]["segment_video_s_per_core_s"]
    print("(vs/cs = video-seconds per CPU-second on one core; process CPU time, best of "
          f"{args.repeats})")
    for r in rows[1:]:
        print(f"ratio {r['clip']} / {rows[0]['clip']} (segment stage, per core): "
              f"{r['segment_video_s_per_core_s'] / base:.3f}")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"rows": rows, "segment_config": dataclasses.asdict(config), "cpu": os.cpu_count(),
                   "loadavg": os.getloadavg()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
