"""``longvid segment VIDEO``: shots, transitions, clips and keyframes of one local video, as the
ingest pipeline would compute them (one decode), printed as JSON or a short summary."""

from __future__ import annotations

import json
import os
import sys
import time

from ..config import ConfigError, add_dataclass_arguments, build_config


def register(sub) -> None:
    from ..annotators.segment import SegmentConfig

    p = sub.add_parser(
        "segment",
        help="detect shots and transitions, cut clips and pick keyframes of one video",
        description="Decode VIDEO once at 48x27 and print its shots (covering every frame in order), "
        "transitions (cut/dissolve/fade, frame spans), clips and DPSelect keyframes.",
    )
    p.add_argument("video", help="a local video file")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--config", help="YAML file with the same settings as the flags below (flags win)")
    add_dataclass_arguments(p, SegmentConfig)
    p.set_defaults(func=cmd_segment)


def segment_file(path: str, config) -> dict:
    """The ``longvid segment`` result for a local file."""
    from ..annotators.probe import probe_file
    from ..annotators.segment import segment_video
    from ..shards.schema import video_id_for

    probe = probe_file(path)
    started = time.perf_counter()
    result = segment_video(path, probe, video_id_for(os.path.abspath(path)), config)
    elapsed = time.perf_counter() - started
    return {
        "fps": probe["fps"],
        "num_frames": result["num_frames"],
        "duration": round(result["num_frames"] / probe["fps"], 6),
        "detector": result["detector"],
        "decoded_frames": result["decoded_frames"],
        "shots": result["shots"],
        "transitions": result["transitions"],
        "clips": result["clips"],
        "keyframes": result["keyframes"],
        "seconds": round(elapsed, 3),
    }


def cmd_segment(args) -> int:
    from ..annotators.base import ItemFailed
    from ..annotators.segment import SegmentConfig
    from ..annotators.shots import DETECTORS

    try:
        config = build_config(SegmentConfig, args, args.config)
    except (ConfigError, OSError) as exc:
        print(f"longvid segment: bad configuration: {exc}", file=sys.stderr)
        return 2
    if config.detector not in DETECTORS:
        print(f"longvid segment: unknown detector {config.detector!r}; known: {sorted(DETECTORS)}", file=sys.stderr)
        return 2
    if not os.path.isfile(args.video):
        print(f"longvid segment: no such file: {args.video}", file=sys.stderr)
        return 2
    try:
        result = segment_file(args.video, config)
    except ItemFailed as exc:
        print(f"longvid segment: {args.video}: {exc.reason}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"longvid segment: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    kinds = {}
    for t in result["transitions"]:
        kinds[t["kind"]] = kinds.get(t["kind"], 0) + 1
    print(f"{args.video}: {result['num_frames']} frames, {result['duration']:.1f} s, {len(result['shots'])} shots "
          f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'no transitions'}), "
          f"{len(result['clips'])} clips, {len(result['keyframes'])} keyframes; detector {result['detector']}, "
          f"{result['decoded_frames']} frames decoded, "
          f"{result['num_frames'] / max(result['seconds'], 1e-9):.0f} frames/s")
    return 0
