"""How the dataset index's consolidation (``shards.index.consolidate``, run by every ingest at start
and by ``finalize`` at the end) grows with the dataset: CPU time and peak memory per million clip
rows, on local storage, extrapolated to a target size. Writes only under --out.

    python bench/index_scale.py --parts 1000 --clips-per-part 300 --target-clips 72000000

Parts are synthetic rows in the real schemas (one part per shard, as the writers make them). S3
adds one GET per part file on top (not measured here: no S3 on this machine).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from longvid.shards.index import CLIP_SCHEMA, VIDEO_SCHEMA, consolidate, part_paths  # noqa: E402
from longvid.shards.storage import Storage  # noqa: E402
from longvid.shards.writer import shard_name  # noqa: E402


def synthetic_part(number: int, videos: int, clips: int) -> tuple[pa.Table, pa.Table]:
    shard = shard_name(number)
    keys = [f"{number:08x}{v:08x}" for v in range(videos)]
    video_rows = [{"key": k, "shard": shard, "media_member": f"{k}.mp4", "media_offset": 1024 * v, "media_size": 1 << 28,
                   "json_offset": 512, "json_size": 9000, "url": f"s3://bucket/src/{k}.mp4", "sha256": k * 4,
                   "duration": 600.0, "fps": 30.0, "num_frames": 18000, "width": 1280, "height": 720,
                   "codec": "h264", "container": "mp4", "has_audio": True, "bucket": "10-30min", "num_shots": 50,
                   "num_clips": clips // videos, "stage3_frames": 512, "visual_tokens": 8192, "status": "ok"}
                  for v, k in enumerate(keys)]
    clip_rows = [{"clip_id": f"{keys[c % videos]}-{c:06d}", "key": keys[c % videos], "shard": shard,
                  "start": 15.0 * c, "end": 15.0 * c + 15, "start_frame": 450 * c, "end_frame": 450 * c + 450,
                  "duration": 15.0, "bucket": "0-30s", "num_keyframes": 4, "stage3_frames": 64, "visual_tokens": 1024}
                 for c in range(clips)]
    return pa.Table.from_pylist(video_rows, schema=VIDEO_SCHEMA), pa.Table.from_pylist(clip_rows, schema=CLIP_SCHEMA)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=1000, help="index parts (= shards)")
    parser.add_argument("--clips-per-part", type=int, default=300, help="a 2 GiB shard holds ~300 clips of 15 s at 3.9 Mbit/s")
    parser.add_argument("--videos-per-part", type=int, default=7)
    parser.add_argument("--target-clips", type=float, default=72e6, help="extrapolate to this many clip rows")
    parser.add_argument("--out", default="bench/out/index_scale")
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    storage = Storage.for_uri(args.out)
    videos, clips = synthetic_part(0, args.videos_per_part, args.clips_per_part)
    for number in range(args.parts):  # same rows in every part: consolidation cost does not depend on values
        vpath, cpath = part_paths(shard_name(number))
        for table, path in ((clips, cpath), (videos, vpath)):
            os.makedirs(os.path.dirname(os.path.join(args.out, path)), exist_ok=True)
            pq.write_table(table, os.path.join(args.out, path))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    v, c = consolidate(storage)
    usage1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    peak_mb = (usage1.ru_maxrss - rss0) / 1024  # ru_maxrss is in KiB on Linux; growth during consolidate
    millions = c.num_rows / 1e6
    scale = args.target_clips / c.num_rows
    print(f"consolidate: {args.parts} parts, {v.num_rows} video rows, {c.num_rows} clip rows")
    print(f"  CPU {cpu:.1f} s ({cpu / millions:.1f} s per million clip rows), wall {wall:.1f} s, "
          f"peak memory growth {peak_mb:.0f} MB ({peak_mb / millions:.0f} MB per million clip rows)")
    print(f"  extrapolated to {args.target_clips / 1e6:.0f} M clip rows ({args.parts * scale:,.0f} parts): "
          f"CPU {cpu * scale / 3600:.2f} h, memory {peak_mb * scale / 1024:.0f} GB, per consolidation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
