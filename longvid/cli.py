"""The ``longvid`` command line. Each command lives in its own module, which exposes
``register(subparsers)``; this file only lists them, so adding a command touches one line here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# module path → registers one or more sub-commands
COMMAND_MODULES = [
    "longvid.pipelines.ingest_cli",  # ingest, probe, demo
    "longvid.pipelines.segment_cli",  # segment
    "longvid.pipelines.annotate_cli",  # annotate (captions, summary + QA layers)
    "longvid.model.cli",  # train, ask
    "longvid.pipelines.export_cli",  # export llava, stats
    "longvid.pipelines.index_cli",  # index (compact + repair the dataset index)
    "longvid.pipelines.semantic_cli",  # dedup-semantic (semantic near-duplicates of an embedding layer)
    "longvid.needle.cli",  # needle build, needle eval
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longvid",
        description="LongVid engine: ingest, segment, caption and stream long-video corpora.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"longvid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last net: one line, never a traceback, for any input
        if os.environ.get("LONGVID_DEBUG"):
            raise
        detail = " ".join(str(exc).split())[:500]
        print(f"longvid {args.command}: {type(exc).__name__}: {detail} (unexpected; set LONGVID_DEBUG=1 to see "
              "where, and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
