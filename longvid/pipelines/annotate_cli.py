"""``longvid annotate DATASET --layer NAME --version TAG --captioner MODEL [--config FILE]``:
a new version of an annotation layer over an existing dataset (see docs/annotation.md).

Parses flags and YAML into :class:`AnnotateConfig` and hands over to ``annotate.run_annotate``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import os
import sys

from ..config import ConfigError, add_dataclass_arguments, build_config
from .annotate import AnnotateConfig, AnnotateError, kind_of, run_annotate

EPILOG = """examples:
  longvid annotate /data/corpus --layer caption --version v2 --captioner HuggingFaceTB/SmolVLM2-2.2B-Instruct
  longvid annotate s3://bucket/corpus --layer caption --version qwen25vl-1 \\
      --captioner Qwen/Qwen2.5-VL-7B-Instruct --pipeline.pool-size 8 --pipeline.batch-size 64
  longvid annotate /data/corpus --layer qa --version v1 --writer Qwen/Qwen2.5-7B-Instruct --source-layer caption/v2
  longvid annotate /data/corpus --layer speech --version v1 --kind speech --speech.model openai/whisper-large-v3-turbo
  longvid annotate /data/corpus --layer qa --version v2 --writer Qwen/Qwen2.5-7B-Instruct \\
      --source-layer caption/v2 --speech-layer speech/v1      # captions and speech, interleaved by time
  longvid annotate /data/corpus --layer caption --version v2 --captioner MODEL --retry-failed   # redo failed items
  longvid annotate /data/corpus --layer caption --version cpu-trial --config annotate.yaml   # all settings in YAML
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "annotate",
        help="write a new version of an annotation layer (clip captions, or summary + QA)",
        description="Caption every clip of an existing dataset with a vision-language model, or write a "
                    "summary and checked QA pairs per video from a caption layer, into "
                    "annotations/<layer>/<version>/. Video shards are never rewritten; a killed run resumes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help="dataset root: a folder or s3://bucket/prefix")
    parser.add_argument("--config", dest="config_file", default=None, help="YAML file of AnnotateConfig settings")
    parser.add_argument("--captioner", dest="captioner_model", default=None, metavar="MODEL",
                        help="vision-language model (hub id or local path) that captions each clip")
    parser.add_argument("--writer", dest="writer_model", default=None, metavar="MODEL",
                        help="text model (hub id or local path) that writes summary + QA from --source-layer")
    parser.add_argument("--backend", dest="backend", default=None, choices=("auto", "vllm", "transformers"),
                        help="engine for the chosen model (default: auto: vllm where it imports, else transformers)")
    add_dataclass_arguments(parser, AnnotateConfig)
    parser.set_defaults(func=main)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] + ("..." if len(text) > 400 else "")


def main(args: argparse.Namespace) -> int:
    extra = {"captioner.model.model": args.captioner_model, "writer.model.model": args.writer_model}
    try:
        config = build_config(AnnotateConfig, args, args.config_file, extra=extra)
        if args.backend:  # the engine of whichever kind this run makes
            kind = kind_of(config)
            settings = getattr(config, kind.config_field)
            config = replace(config, **{kind.config_field: kind.with_backend(settings, args.backend)})
        summary = run_annotate(args.dataset, config)
    except (ConfigError, AnnotateError, ValueError) as exc:  # bad settings, not a dataset, unknown prompt
        print(f"longvid annotate: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a model that will not load, a lost cluster: one line, no traceback
        print(f"longvid annotate: {type(exc).__name__}: {one_line(exc)} (set LONGVID_TRACEBACK=1 for details)",
              file=sys.stderr)
        if os.environ.get("LONGVID_TRACEBACK"):
            raise
        return 1
    return 1 if summary["videos"] and summary["failed_videos"] == summary["videos"] else 0
