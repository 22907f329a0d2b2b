"""``longvid export llava DATASET --out DIR``, ``longvid export energon DATASET`` and ``longvid stats
DATASET`` (see docs/export-and-stats.md, docs/interop.md).

Parses flags and hands over to ``export.run_export_llava``, ``export_energon`` and ``shards.stats``; bad input exits 2
with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..shards.dataset import DatasetError
from ..shards.stats import dataset_stats, default_report_path, format_stats, write_report
from ..shards.storage import is_s3
from .export import DATA_YAML, STAGES, UNITS, VIDEO_READ_TYPES, ExportError, LlavaExportConfig, run_export_llava

EXPORT_EPILOG = f"""output:
  DIR/llava_<unit>_<bucket>.jsonl  one file per unit and duration bucket (e.g. llava_clip_0-30s.jsonl;
                                   bucket >1h is written gt1h)
  DIR/videos/<key>.mp4             whole videos (copied out of the shards, checked by sha256)
  DIR/clips/<clip_id>.mp4          one file per clip record: exactly the clip's frames
  DIR/{DATA_YAML}            the trainer's data YAML (datasets: json_path, sampling_strategy, data_root,
                                   video_read_type), written last

examples:
  longvid export llava /data/corpus --out /data/llava              # a folder VideoChat-Flash trains on
  longvid export llava /data/corpus --out /data/llava-s2 --stage stage2 --layer caption/v1
  longvid export llava s3://bucket/corpus --out ./llava --unit clip --data-root /mnt/llava-media
"""

STATS_EPILOG = """examples:
  longvid stats /data/corpus                      # text summary; report at /data/corpus/report.html
  longvid stats s3://bucket/corpus --html /tmp/corpus.html
  longvid stats /data/corpus --json --no-html     # machine-readable, nothing written
"""


def register(subparsers) -> None:
    _register_export(subparsers)
    _register_stats(subparsers)


def _register_export(subparsers) -> None:
    export = subparsers.add_parser(
        "export", help="export a dataset for a trainer (llava: VideoChat-Flash JSONL + data YAML)",
        description="Export a dataset's samples and chosen annotation layers in a trainer's format.",
    )
    formats = export.add_subparsers(dest="export_format", metavar="FORMAT")
    export.set_defaults(func=lambda args: _usage(export))
    parser = formats.add_parser(
        "llava",
        help="VideoChat-Flash / LLaVA-style JSONL per duration bucket, its media files and the data YAML",
        description="Write one JSONL file of LLaVA-style records (id, video, conversations, duration) per unit and "
                    "duration bucket, the media files they reference (whole videos; one file per clip with exactly "
                    "its frames) and the data YAML VideoChat-Flash's stock trainer reads. Conversations come from "
                    "the chosen annotation layers; records without turns are skipped and counted. The dataset is "
                    "only read.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = LlavaExportConfig()
    parser.add_argument("dataset", help="dataset root: a folder or s3://bucket/prefix")
    parser.add_argument("--out", required=True, metavar="DIR", help="local output folder (created if missing)")
    parser.add_argument("--layer", dest="layers", action="append", default=[], metavar="LAYER/VERSION",
                        help="annotation layer version to build conversations from; repeat for several "
                             "(default: every layer that has exactly one version)")
    parser.add_argument("--unit", choices=UNITS, default=defaults.unit,
                        help=f"export whole-video records, clip records, or both (default: {defaults.unit})")
    parser.add_argument("--stage", choices=STAGES, default=defaults.stage,
                        help="the peer's training stage whose frame counts the records follow "
                             f"(stage2: 4-8 frames, stage3: 64-512; default: {defaults.stage})")
    parser.add_argument("--time-prompt", action="store_true",
                        help="write our time prompt after <image> (off: the peer's --time_msg short adds its own)")
    parser.add_argument("--data-root", default=None, metavar="PATH",
                        help="an existing folder that already holds videos/ and clips/ from an earlier export "
                             "(checked: every referenced file must be there); default: write them under DIR")
    parser.add_argument("--extract-media", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--video-read-type", choices=VIDEO_READ_TYPES, default=defaults.video_read_type,
                        help=f"the trainer's video reader, written into the YAML; av needs MP4 files "
                             f"(default: {defaults.video_read_type})")
    parser.add_argument("--sampling-strategy", default=defaults.sampling_strategy, metavar="STRATEGY",
                        help="per-file sampling written into the YAML, as the peer parses it: all, first:N, "
                             "first2:N..first4:N, end:N, or N as a whole percentage P%% (N, P >= 1) "
                             f"(default: {defaults.sampling_strategy})")
    parser.add_argument("--json-root", default=None, metavar="PATH",
                        help="prefix of each json_path in the YAML, for a trainer that sees DIR elsewhere "
                             "(default: the absolute DIR)")
    parser.add_argument("--max-text-tokens", type=int, default=defaults.max_text_tokens, metavar="N",
                        help="longest conversation text of a record; longer ones are split at turns, a single "
                             f"longer turn is dropped; counted in the summary (default: {defaults.max_text_tokens})")
    parser.add_argument("--tokenizer", default=defaults.tokenizer, metavar="NAME",
                        help="tokenizer that counts text tokens, from the local cache only "
                             f"(default: {defaults.tokenizer}; if it is not there: 4 characters a token)")
    parser.add_argument("--tokenizer-path", default=None, metavar="DIR",
                        help="a local tokenizer folder, tried before --tokenizer")
    parser.add_argument("--where", default=None, metavar="FILTER",
                        help="export only videos whose index row passes, e.g. \"duration > 60 and width >= 640\" "
                             "(their clips follow); never evaluated as code")
    parser.add_argument("--semantic-layer", default=None, metavar="LAYER/VERSION",
                        help="an embedding layer whose dedup-semantic result --where can read "
                             "(semantic_duplicates, semantic_duplicate_share), e.g. embed/v1")
    parser.set_defaults(func=main_export_llava)
    _register_energon(formats)


def _register_energon(formats) -> None:
    parser = formats.add_parser(
        "energon",
        help="Megatron-Energon metadata (.nv-meta) beside the shards, so energon's loader opens them",
        description="Index the dataset's shards with Megatron-Energon's own preparation API and write "
                    "DATASET/.nv-meta (dataset.yaml, split.yaml, index.sqlite, index.uuid, .info.json): "
                    "megatron.energon.get_train_dataset(DATASET, ...) then opens it with no `energon prepare`. "
                    "Samples are crude dicts (mp4, json); shards and index are not touched.",
        epilog="examples:\n  longvid export energon /data/corpus\n"
               "  longvid export energon /data/corpus --split train=0.98 --split val=0.02\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help="dataset root: a local folder (.nv-meta is written into it)")
    parser.add_argument("--split", dest="splits", action="append", default=[], metavar="NAME=RATIO",
                        help="split of whole shards in shard order; repeat for several (default: train=1)")
    parser.set_defaults(func=main_export_energon)


def main_export_energon(args: argparse.Namespace) -> int:
    from .export_energon import EnergonExportConfig, parse_splits, run_export_energon

    try:
        config = EnergonExportConfig(**({"splits": parse_splits(args.splits)} if args.splits else {}))
        run_export_energon(args.dataset, config)
    except (ExportError, DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"longvid export energon: {exc}", file=sys.stderr)
        return 2
    return 0


def _register_stats(subparsers) -> None:
    parser = subparsers.add_parser(
        "stats", help="hours, counts, duration buckets and annotation layers of a dataset (+ HTML report)",
        description="Print a dataset's hours, video/clip/shard counts, counts and hours per duration bucket and "
                    "its annotation layers (rows, producer), and write a self-contained HTML report with the "
                    "duration histogram as inline SVG.",
        epilog=STATS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help="dataset root: a folder or s3://bucket/prefix")
    parser.add_argument("--html", default=None, metavar="PATH",
                        help="local path of the HTML report (default: DATASET/report.html for a local dataset, "
                             "./<name>-report.html for one on S3)")
    parser.add_argument("--no-html", action="store_true", help="write no HTML report")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON instead of text")
    parser.set_defaults(func=main_stats)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main_export_llava(args: argparse.Namespace) -> int:
    config = LlavaExportConfig(
        layers=list(args.layers), unit=args.unit, stage=args.stage, time_prompt=args.time_prompt,
        data_root=args.data_root, video_read_type=args.video_read_type, sampling_strategy=args.sampling_strategy,
        json_root=args.json_root, max_text_tokens=args.max_text_tokens, tokenizer=args.tokenizer,
        tokenizer_path=args.tokenizer_path, where=args.where, semantic_layer=args.semantic_layer,
    )
    try:
        summary = run_export_llava(args.dataset, args.out, config)
    except (ExportError, DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"longvid export llava: {exc}", file=sys.stderr)
        return 2
    return 1 if (summary["media"] or {}).get("failed") else 0


def main_stats(args: argparse.Namespace) -> int:
    from ..shards.storage import Storage

    if args.html and is_s3(args.html):
        print("longvid stats: --html must be a local path", file=sys.stderr)
        return 2
    try:
        stats = dataset_stats(Storage.for_uri(args.dataset))
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"longvid stats: {exc}", file=sys.stderr)
        return 2
    if not args.no_html:
        path = write_report(stats, args.html or default_report_path(args.dataset))
        stats["report"] = path
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        print(format_stats(stats))
        if "report" in stats:
            print(f"report: {stats['report']}")
    return 0
