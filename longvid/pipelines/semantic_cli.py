"""``longvid dedup-semantic DATASET --layer embed/v1 --eps 0.05 --clusters K``: semantic
near-duplicate clusters of an embedding layer (see docs/curation.md).

Parses flags and YAML into :class:`SemanticDedupConfig` and hands over to ``semantic_dedup``.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError, add_dataclass_arguments, build_config
from .semantic_dedup import SemanticDedupConfig, SemanticDedupError, run_semantic_dedup

EPILOG = """examples:
  longvid annotate /data/corpus --kind embedding --layer embed --version v1 --encoder.model google/siglip-base-patch16-224
  longvid dedup-semantic /data/corpus --layer embed/v1 --eps 0.05 --clusters 5000
  longvid export llava /data/corpus --out /data/llava --semantic-layer embed/v1 --where "semantic_duplicates = 0"
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "dedup-semantic",
        help="semantic near-duplicate clusters of an embedding layer (k-means, then pairwise cosine per cluster)",
        description="SemDedup over an embedding layer: k-means over the clip embeddings, then within each cluster "
                    "a clip whose cosine similarity to a higher-ranked clip (longer, then earlier) is above 1 - eps "
                    "is marked as its duplicate. Writes annotations/<layer>/<version>/semantic/; nothing is dropped: "
                    "filter at read time.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help="dataset root: a folder or s3://bucket/prefix")
    parser.add_argument("--config", dest="config_file", default=None, help="YAML file of SemanticDedupConfig settings")
    add_dataclass_arguments(parser, SemanticDedupConfig)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        config = build_config(SemanticDedupConfig, args, args.config_file)
        run_semantic_dedup(args.dataset, config)
    except (ConfigError, SemanticDedupError, ValueError, FileNotFoundError) as exc:
        text = " ".join(str(exc).split())[:400]
        print(f"longvid dedup-semantic: {text}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a lost cluster, an unreadable part: one line, no traceback
        print(f"longvid dedup-semantic: {type(exc).__name__}: {' '.join(str(exc).split())[:400]} "
              "(set LONGVID_TRACEBACK=1 for details)", file=sys.stderr)
        if os.environ.get("LONGVID_TRACEBACK"):
            raise
        return 1
    return 0
