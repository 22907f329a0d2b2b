"""Training-stream throughput on long videos next to two references, measured in the same run.

Generates long H.264 videos (or takes --videos), writes them as a LongVid dataset (shards and
index; shots from the generator's known cuts, no Ray), then for each stage's frame plan measures
frames delivered per second by
  1. naive: decode every frame of each file, keep the planned ones;
  2. floor: PyAV seek + decode of only the planned frames from the file path (longvid.shards.seekio);
  3. stream: ShardStream over the shards (ranged reads inside the tar member, seek decoding);
and the time to the first batch after resuming at 90% of an epoch against from the start.

    python bench/stream.py --count 3 --seconds 600 --width 640 --height 360
    python bench/stream.py --small --json /tmp/stream.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import av  # noqa: E402

from longvid.shards.sampling import STAGES_BY_NAME, frame_indices  # noqa: E402
from longvid.shards.seekio import DecodeStats, decode_frames  # noqa: E402
from longvid.shards.stream import ShardStream, SourceSpec, StreamConfig  # noqa: E402
from longvid.synthetic import encode_frames, scene_frame, write_known_cut_dataset  # noqa: E402


def render_video(path: str, shots: list[int], fps: int, width: int, height: int, gop: int) -> list[int]:
    """Like longvid.synthetic.write_video (its scene backgrounds), rendered faster for long videos:
    each shot's background is drawn once, then scrolls, with a moving square; returns the cuts."""
    import numpy as np

    cuts = [sum(shots[:i]) for i in range(1, len(shots))]
    size = max(4, height // 5)

    def frames():
        for scene, length in enumerate(shots):
            background = scene_frame(scene, 0, width, height)
            for t in range(length):
                img = np.roll(background, t % width, axis=1)
                x, y = (t * 3 + scene * 11) % (width - size), (t * 2 + scene * 5) % (height - size)
                img[y : y + size, x : x + size] = 255 - img[y, x]
                yield img

    encode_frames(path, frames(), fps, width, height, "h264", gop=gop)
    return cuts


def make_videos(folder: str, count: int, seconds: float, width: int, height: int, fps: int, gop: int):
    """Videos of 4-8 s shots; returns (path, cuts) pairs."""
    out = []
    for i in range(count):
        path = os.path.join(folder, f"long-{i:03d}.mp4")
        frames = int(seconds * fps)
        shot = max(10, int(fps * (4 + i % 5)))
        shots = [shot] * (frames // shot) + ([frames % shot] if frames % shot else [])
        shots[0] += i  # distinct content per file
        out.append((path, render_video(path, shots, fps, width, height, gop)))
    return out


def plans(paths: list[str], stage: str) -> dict[str, list[int]]:
    bounds = STAGES_BY_NAME[stage]
    out = {}
    for path in paths:
        with av.open(path) as c:
            s = c.streams.video[0]
            out[path] = frame_indices(s.frames, float(s.average_rate), bounds.lo, bounds.hi)
    return out


def naive(plan: dict[str, list[int]]) -> tuple[int, float, int]:
    """(frames delivered, wall seconds, frames decoded): decode everything, keep the planned frames
    (stacked into one array per video, as a loader hands them out)."""
    import numpy as np

    delivered = decoded = 0
    t0 = time.perf_counter()
    for path, indices in plan.items():
        wanted, kept = set(indices), {}
        with av.open(path) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for i, frame in enumerate(c.decode(s)):
                decoded += 1
                if i in wanted:
                    kept[i] = frame.to_ndarray(format="rgb24")
        delivered += len(np.stack([kept[i] for i in indices]))
    return delivered, time.perf_counter() - t0, decoded


def floor(plan: dict[str, list[int]]) -> tuple[int, float, int]:
    stats = DecodeStats()
    t0 = time.perf_counter()
    delivered = sum(len(decode_frames(path, indices, stats=stats)) for path, indices in plan.items())
    return delivered, time.perf_counter() - t0, stats.frames_decoded


def streamed(root: str, stage: str, block_size: int) -> tuple[int, float, int, ShardStream]:
    t0 = time.perf_counter()
    s = ShardStream(StreamConfig(sources=[SourceSpec(root)], stage=stage, epochs=1, block_size=block_size))
    delivered = sum(sample["frames"].shape[0] for sample in s)
    return delivered, time.perf_counter() - t0, s.decode_stats.frames_decoded, s


def first_batch(root: str, stage: str, at: float, batch: int) -> tuple[float, int]:
    """Seconds from building a clip stream to its first ``batch`` samples, resumed at ``at`` of an epoch."""
    t0 = time.perf_counter()
    config = StreamConfig(sources=[SourceSpec(root)], unit="clip", stage=stage, epochs=1)
    s = ShardStream(config)
    total = len(s.sources[0])
    if at > 0:
        planner = ShardStream(StreamConfig(**{**config.__dict__, "decode": False}))  # no decoding to get there
        for _ in range(int(at * total)):
            planner.advance()
        s.load_state_dict(planner.state_dict())
    got = list(itertools.islice(iter(s), batch))
    return time.perf_counter() - t0, s.position if got else -1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--gop-seconds", type=float, default=3.0, help="keyframe spacing of generated videos")
    ap.add_argument("--stages", default="stage3,stage2", help="frame plans to measure, comma-separated")
    ap.add_argument("--block-kib", type=int, default=256, help="the stream's ranged-read block size")
    ap.add_argument("--batch", type=int, default=4, help="samples in the first batch after a resume")
    ap.add_argument("--small", action="store_true", help="2 videos of 120 s at 320x180: a quick run")
    ap.add_argument("--videos", nargs="*", help="use these files instead of generated ones")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if args.small:
        args.count, args.seconds, args.width, args.height = 2, 120.0, 320, 180

    work = tempfile.mkdtemp(prefix="longvid-bench-stream-")
    try:
        t0 = time.perf_counter()
        if args.videos:
            videos = [(p, []) for p in args.videos]
        else:
            videos = make_videos(work, args.count, args.seconds, args.width, args.height, args.fps,
                                 max(1, int(args.gop_seconds * args.fps)))
        root = os.path.join(work, "ds")
        write_known_cut_dataset(root, videos, per_shard=1)
        paths = [p for p, _ in videos]
        print(f"{len(paths)} videos x {args.seconds:.0f} s, {args.width}x{args.height} @ {args.fps} fps, "
              f"GOP {args.gop_seconds:g} s, {os.cpu_count()} cores (prepared in {time.perf_counter() - t0:.0f} s)")
        figures: dict = {"block_kib": args.block_kib, "videos": len(paths), "seconds": args.seconds,
                         "size": [args.width, args.height], "fps": args.fps, "gop_seconds": args.gop_seconds,
                         "cores": os.cpu_count(), "stages": {}}
        print(f"{'stage':7} {'loader':30} {'frames':>7} {'wall s':>8} {'frames/s':>9} {'decoded':>8} "
              f"{'vs floor':>9}")
        for stage in args.stages.split(","):
            plan = plans(paths, stage)
            rows = {"naive (decode all, subsample)": naive(plan), "floor (PyAV seek, file path)": floor(plan)}
            n, wall, decoded, s = streamed(root, stage, args.block_kib * 1024)
            rows["longvid stream (shards)"] = (n, wall, decoded)
            floor_rate = rows["floor (PyAV seek, file path)"][0] / rows["floor (PyAV seek, file path)"][1]
            out = {}
            for name, (frames, seconds, dec) in rows.items():
                rate = frames / seconds
                out[name] = {"frames": frames, "wall_s": round(seconds, 3), "frames_per_s": round(rate, 1),
                             "frames_decoded": dec, "ratio_to_floor": round(rate / floor_rate, 3)}
                print(f"{stage:7} {name:30} {frames:7d} {seconds:8.2f} {rate:9.1f} {dec:8d} {rate / floor_rate:9.2f}")
            media = sum(os.path.getsize(p) for p in paths)
            out["stream_bytes_read"] = s.decode_stats.bytes_fetched
            out["media_bytes"] = media
            print(f"{stage:7} stream read {s.decode_stats.bytes_fetched / 1e6:.1f} MB of {media / 1e6:.1f} MB "
                  f"of media; {s.decode_stats.seeks} seeks; skipped {s.skipped or 'none'}")
            figures["stages"][stage] = out
        stage = args.stages.split(",")[0]
        start_s, _ = first_batch(root, stage, 0.0, args.batch)
        late_s, position = first_batch(root, stage, 0.9, args.batch)
        figures["first_batch_s"] = {"from_start": round(start_s, 3), "resumed_at_90pct": round(late_s, 3),
                                    "resume_position": position}
        print(f"first batch of {args.batch} clips ({stage}): from the start {start_s:.2f} s, "
              f"resumed at 90% of the epoch {late_s:.2f} s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
