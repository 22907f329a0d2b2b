"""``longvid index DATASET``: compact and repair a dataset's index (idempotent, safe to kill).

Rebuilds the index parts of shards that lack one, drops shards gone from storage, merges the
parts not yet compacted into batch files, writes the shard table, then ``dataset.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

from ..config import ConfigError, add_dataclass_arguments, build_config
from ..shards.catalog import CompactConfig
from ..shards.lease import LeaseConfig


@dataclass
class IndexCommandConfig:
    lease: LeaseConfig = field(default_factory=LeaseConfig)  # compaction rewrites the index: one writer at a time


def register(subparsers) -> None:
    defaults = CompactConfig()
    parser = subparsers.add_parser(
        "index", help="compact and repair a dataset's index (shard table + batch files)",
        description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="dataset root: a local folder or s3://bucket/prefix")
    parser.add_argument("--shards-per-file", type=int, default=defaults.shards_per_file,
                        help=f"shards merged into one compacted file (default {defaults.shards_per_file})")
    parser.add_argument("--row-group-rows", type=int, default=defaults.row_group_rows,
                        help=f"rows per Parquet row group of a compacted file (default {defaults.row_group_rows})")
    parser.add_argument("--all", action="store_true",
                        help="also compact the last, partial batch (default: leave it as parts until it fills)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_dataclass_arguments(parser, IndexCommandConfig)
    parser.set_defaults(func=main_index)


def main_index(args: argparse.Namespace) -> int:
    from ..shards.compact import update_index
    from ..shards.damaged import set_aside_damaged_shards
    from ..shards.dataset import DamagedDatasetJson, DatasetError, read_dataset_json, write_dataset_json
    from ..shards.lease import DatasetLease, LeaseHeldError, LeaseLostError
    from ..shards.ledger import new_run_id
    from ..shards.storage import Storage

    if args.shards_per_file < 1 or args.row_group_rows < 1:
        print("longvid index: --shards-per-file and --row-group-rows must be >= 1", file=sys.stderr)
        return 2
    config = CompactConfig(shards_per_file=args.shards_per_file, row_group_rows=args.row_group_rows,
                           compact_remainder=args.all)
    try:
        command = build_config(IndexCommandConfig, args)
        storage = Storage.for_uri(args.dataset)
        try:
            read_dataset_json(storage)  # refuse what is not a dataset (or is newer than this code)
        except DamagedDatasetJson as exc:  # the index is the truth: dataset.json is rewritten from it below
            print(f"longvid index: {exc}: rewriting it", file=sys.stderr)
        with DatasetLease(storage, new_run_id(), "index", command.lease) as lease:
            if lease.takeover_note():
                print(lease.takeover_note(), file=sys.stderr)
            _, set_aside = set_aside_damaged_shards(storage)  # damaged shards to quarantine/ (damaged.py)
            for note in set_aside:
                print(f"longvid index: set aside {note['shard']}: {note['reason']}", file=sys.stderr)
            report = update_index(storage, config, repair=True)
            meta = write_dataset_json(storage)
    except (LeaseHeldError, LeaseLostError) as exc:
        print(f"longvid index: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"longvid index: {exc}", file=sys.stderr)
        return 2
    out = {"dataset": storage.root, "shards": report.shards, "added": report.added,
           "compacted_files": len(report.compacted_files), "repaired": report.repaired,
           "dropped": report.dropped, "cleaned": len(report.cleaned), "counts": meta["counts"],
           "hours": meta["hours"]}
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(f"index {storage.root}: {report.shards} shards ({report.added} new), "
              f"{len(report.compacted_files) // 2} new compacted file pair(s), {len(report.repaired)} part(s) rebuilt, "
              f"{len(report.dropped)} shard(s) dropped, {len(report.cleaned)} leftover file(s) removed")
        for shard in report.dropped:
            print(f"  dropped {shard}: its tar is gone")
        c = meta["counts"]
        print(f"  {c['videos']} videos, {c['clips']} clips, {meta['hours']:.3f} h")
    return 0
