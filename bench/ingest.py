"""Ingestion throughput next to its physical floor, measured in the same run.

Generates H.264 videos (or takes --videos), then measures
  1. PyAV decode-only of every frame of the same files (threads on, all cores): the floor;
  2. `run_ingest` on a local Ray (fetch → probe → segment → plan → write) into a fresh folder;
and prints video-seconds per wall-second for both and their ratio.

    python bench/ingest.py --count 8 --seconds 60 --width 640 --height 360
    python bench/ingest.py --count 4 --seconds 30 --also bench/out/segmentation/long-9100-1200s-640x360-veryfast.mp4 \
        --detector sparse        # one 20-minute video (split into parallel windows) plus four short ones
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import av  # noqa: E402

from longvid.pipelines.ingest import IngestConfig, RayConfig, run_ingest  # noqa: E402
from longvid.pipelines.manifest import write_manifest  # noqa: E402
from longvid.synthetic import write_video  # noqa: E402


def make_videos(folder: str, count: int, seconds: float, width: int, height: int, fps: int) -> list[str]:
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"bench-{i:03d}.mp4")
        frames = int(seconds * fps)
        shot = max(10, int(fps * (4 + i % 5)))
        shots = [shot] * (frames // shot) + ([frames % shot] if frames % shot else [])
        shots[0] += i  # distinct content per file
        write_video(path, shots, fps=fps, width=width, height=height, gop=fps * 2)
        paths.append(path)
    return paths


def decode_only(paths: list[str]) -> tuple[float, float]:
    """(video seconds, wall seconds) to decode every frame of every file with PyAV."""
    total, t0 = 0.0, time.perf_counter()
    for path in paths:
        with av.open(path) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            n = sum(1 for _ in c.decode(s))
            total += n / float(s.average_rate)
    return total, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--videos", nargs="*", help="use these files instead of generated ones")
    ap.add_argument("--also", nargs="*", default=[], help="add these files to the generated (or given) ones")
    ap.add_argument("--detector", default=None, help="segment.detector (default: the engine's)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="longvid-bench-")
    try:
        paths = args.videos or make_videos(work, args.count, args.seconds, args.width, args.height, args.fps)
        paths = list(paths) + list(args.also)
        video_s, decode_wall = decode_only(paths)
        manifest = write_manifest(os.path.join(work, "m.jsonl"), paths)
        config = IngestConfig(ray=RayConfig(progress_bars=False))
        if args.detector:
            config.segment.detector = args.detector
        summary = run_ingest(manifest, os.path.join(work, "ds"), config, log_stream=open(os.devnull, "w"))
        ingest_rate = summary.video_seconds / summary.wall_s
        decode_rate = video_s / decode_wall
        figures = {
            "files": len(paths), "video_seconds": round(video_s, 1), "cores": os.cpu_count(),
            "decode_only_video_s_per_s": round(decode_rate, 1),
            "ingest_video_s_per_s": round(ingest_rate, 1),
            "ingest_wall_s": round(summary.wall_s, 1),
            "ratio_ingest_to_decode": round(ingest_rate / decode_rate, 3),
            "detector": config.segment.detector, "written": summary.written, "failed": summary.failed, "clips": summary.clips,
        }
        print(f"files {len(paths)}, {video_s:.0f} s of video, {os.cpu_count()} cores")
        print(f"PyAV decode-only : {decode_rate:8.1f} video-s/s  ({decode_wall:.1f} s)")
        print(f"longvid ingest   : {ingest_rate:8.1f} video-s/s  ({summary.wall_s:.1f} s, incl. Ray start)")
        print(f"ratio ingest / decode-only: {ingest_rate / decode_rate:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
