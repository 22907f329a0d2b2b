"""``longvid ingest``, ``longvid probe`` and ``longvid demo`` (generated sample videos → dataset)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..config import ConfigError, add_dataclass_arguments, build_config
from ..shards.lease import LeaseHeldError, LeaseLostError
from .ingest import IngestConfig, IngestError, check_output, run_ingest
from .manifest import ManifestError
from .placement import ResourceError


def register(sub) -> None:
    p = sub.add_parser(
        "ingest",
        help="ingest a manifest of videos into a dataset of WebDataset shards",
        description="Fetch, probe, segment and plan every video of MANIFEST (CSV/TSV/JSONL/Parquet with a "
        "'url' column; local paths, s3:// or http(s)://) into DATASET (a folder or s3://bucket/prefix). "
        "Rerunning the same command resumes: committed videos are skipped, failed ones retried.",
    )
    p.add_argument("manifest", help="manifest file (local or s3://)")
    p.add_argument("--out", required=True, help="dataset root: a local folder or s3://bucket/prefix")
    p.add_argument("--config", help="YAML file with the same settings as the flags below (flags win)")
    p.add_argument("--summary-json", help="also write the run summary as JSON to this file")
    add_dataclass_arguments(p, IngestConfig)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("probe", help="print the probe JSON of a video file")
    p.add_argument("file")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "demo",
        help="generate sample videos and ingest them on a local Ray (a first run in one command)",
    )
    p.add_argument("--out", default="datasets/demo", help="dataset folder to create")
    p.add_argument("--videos", type=int, default=12, help="how many sample videos to generate")
    p.add_argument("--seconds", type=float, default=40.0, help="length of the longest sample video")
    p.set_defaults(func=cmd_demo)


def cmd_ingest(args) -> int:
    try:
        config = build_config(IngestConfig, args, args.config)
    except (ConfigError, OSError) as exc:
        print(f"longvid ingest: bad configuration: {exc}", file=sys.stderr)
        return 2
    try:
        check_output(args.out)  # before the manifest is read or Ray started
        if args.summary_json and os.path.isdir(args.summary_json):
            raise IngestError(f"--summary-json {args.summary_json} is a directory: name a file")
        summary = run_ingest(args.manifest, args.out, config)
    except (ManifestError, IngestError, ResourceError) as exc:
        print(f"longvid ingest: {exc}", file=sys.stderr)
        return 2
    except (LeaseHeldError, LeaseLostError) as exc:  # another writer: a different code, so scripts can wait
        print(f"longvid ingest: {exc}", file=sys.stderr)
        return 3
    print(summary.format())
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary.as_dict(), f, indent=2)
    return 0


def cmd_probe(args) -> int:
    from ..annotators.base import ItemFailed
    from ..annotators.probe import probe_file

    if not os.path.isfile(args.file):
        print(f"longvid probe: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(probe_file(args.file), indent=2))
    except ItemFailed as exc:
        print(f"longvid probe: {args.file}: {exc.reason}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args) -> int:
    from ..synthetic import write_video
    from .manifest import write_manifest

    src = os.path.join(os.path.abspath(args.out) + "-sources")
    os.makedirs(src, exist_ok=True)
    codecs = ["h264", "vp9", "hevc", "mpeg4"]
    urls = []
    for i in range(args.videos):
        seconds = args.seconds * (i + 1) / args.videos
        fps = 25
        n_shots = max(1, int(seconds // 6))
        shot = int(seconds * fps / n_shots)
        codec = codecs[i % len(codecs)]
        ext = {"h264": "mp4", "vp9": "webm", "hevc": "mkv", "mpeg4": "avi"}[codec]
        path = os.path.join(src, f"sample-{i:03d}.{ext}")
        if not os.path.exists(path):
            write_video(path, [shot] * n_shots, fps=fps, codec=codec)
        urls.append(path)
    manifest = write_manifest(os.path.join(src, "manifest.jsonl"), urls, {"title": [f"sample {i}" for i in range(len(urls))]})
    print(f"[longvid] generated {len(urls)} sample videos in {src}", file=sys.stderr)
    summary = run_ingest(manifest, args.out, IngestConfig())
    print(summary.format())
    return 0
