"""What uniform MP4 members cost at ingest: ``to_mp4`` (stream copy + faststart) next to a
decode of every frame of the same file (what segmentation does anyway), in the same run.

Also times the export's clip files: ``write_clip_files`` for a video's clips (re-encode of the
spans that do not start and end on keyframes) against the same decode floor.

    python bench/remux.py --seconds 120 --width 640 --height 360
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import av  # noqa: E402

from longvid.annotators.clip_media import ClipSpan, write_clip_files  # noqa: E402
from longvid.annotators.remux import to_mp4  # noqa: E402
from longvid.synthetic import write_video  # noqa: E402


def decode_all(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as c:
        c.streams.video[0].thread_type = "AUTO"
        return sum(1 for _ in c.decode(video=0))


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--codec", default="hevc", help="source codec (hevc → MKV source, h264 → MP4)")
    parser.add_argument("--clip-seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from longvid.synthetic import CODECS

        path = os.path.join(tmp, f"src.{CODECS[args.codec][0]}")
        frames = int(args.seconds * args.fps)
        shot = max(1, frames // 6)
        write_video(path, [shot] * 5 + [frames - 5 * shot], fps=args.fps, width=args.width, height=args.height,
                    codec=args.codec)
        data = open(path, "rb").read()
        t_decode, n = timed(decode_all, data)
        t_remux, (media, info) = timed(to_mp4, data, CODECS[args.codec][0])
        per = int(args.clip_seconds * args.fps)
        spans = [ClipSpan(f"c{i}", s, min(s + per, n), os.path.join(tmp, f"c{i}.mp4"))
                 for i, s in enumerate(range(0, n, per))]
        t_clips, how = timed(write_clip_files, media, spans)
    copies = sum(1 for h in how.values() if h == "copy")
    print(f"source {args.codec} {args.width}x{args.height} {args.seconds:.0f} s ({n} frames, {len(data) / 1e6:.1f} MB)")
    print(f"  decode every frame (floor)   {t_decode:6.2f} s  {args.seconds / t_decode:7.1f} video-s/s")
    print(f"  to_mp4 ({info['remux']['video']})        {t_remux:6.2f} s  {args.seconds / t_remux:7.1f} video-s/s  "
          f"= {t_decode / t_remux:.1f}x faster than the decode")
    print(f"  clip files ({len(spans)} x {args.clip_seconds:.0f} s; {copies} copied, {len(spans) - copies} re-encoded)  "
          f"{t_clips:6.2f} s  {args.seconds / t_clips:7.1f} video-s/s  = {t_clips / t_decode:.1f}x the decode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
