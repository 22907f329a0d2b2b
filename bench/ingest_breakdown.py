"""Where an ingest's CPU goes, stage by stage, in one process (no Ray): fetch, probe, segment (a long
video windowed as the pipeline does, but serially), plan and the writer's remux to MP4, on the same
files as ``bench/ingest.py``. Compare the sum with that script's wall time to see Ray's share.

    python bench/ingest_breakdown.py --count 4 --seconds 30 \
        --also bench/out/segmentation/long-9100-600s-640x360-veryfast-x2.mp4 --detector sparse
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ingest import make_videos  # noqa: E402

from longvid.annotators.fetch import Fetch  # noqa: E402
from longvid.annotators.plan import Plan  # noqa: E402
from longvid.annotators.probe import Probe  # noqa: E402
from longvid.annotators.remux import to_mp4  # noqa: E402
from longvid.annotators.segment import Segment, SegmentConfig, segment_video, segment_video_windowed  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--also", nargs="*", default=[], help="add these files to the generated ones")
    ap.add_argument("--detector", default="sparse")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="longvid-breakdown-")
    seconds: dict[str, float] = {}

    def timed(name, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
        return out

    try:
        paths = make_videos(work, args.count, args.seconds, 640, 360, 30) + list(args.also)
        config = SegmentConfig(detector=args.detector)
        stage = Segment(config)
        for i, path in enumerate(paths):
            item = timed("fetch", Fetch().process, {"source": {"url": path, "source_index": i}})
            item = timed("probe", Probe().process, item)
            probe = item["probe"]
            if probe["num_frames"] / probe["fps"] > config.windows.parallel_above_seconds:
                result = timed("segment, windowed", segment_video_windowed, item["media"], probe, item["video_id"], config)
            else:
                result = timed("segment", segment_video, item["media"], probe, item["video_id"], config)
            item = timed("plan", Plan().process, stage.store(item, result))
            timed("remux to MP4 (writer)", to_mp4, item["media"], probe["media_ext"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(seconds.values())
    for name, s in seconds.items():
        print(f"{name:24s} {s:6.2f} s  {100 * s / total:5.1f}%")
    print(f"{'total (one process)':24s} {total:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
