"""``longvid export energon``: Megatron-Energon's metadata beside a dataset's shards, so that
``megatron.energon.get_train_dataset(DATASET, ...)`` opens them with no ``energon prepare``.

The index files (``.nv-meta/index.sqlite``, ``index.uuid``, ``.info.json``, ``split.yaml``) are
made by energon's own preparation API (the one its ``energon prepare`` command calls), so they
match the installed energon exactly; ``dataset.yaml`` declares the samples crude (a dict of
``mp4`` and ``json`` for the user's cooker), as ``energon prepare --sample-type CrudeWebdataset``
writes it. Only ``.nv-meta/`` is written; shards and index are never touched.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass, field

import yaml

from ..shards.dataset import read_dataset_json
from ..shards.index import committed_shards
from ..shards.storage import Storage, is_s3
from .export import ExportError

NV_META = ".nv-meta"
ENERGON_PIN = "megatron-energon==7.4.1"  # the version this export is tested against (constraints.txt)
DATASET_YAML = {"__module__": "megatron.energon", "__class__": "CrudeWebdataset"}


@dataclass
class EnergonExportConfig:
    # split name → ratio of shards (whole shards, in shard order); energon's loader reads split_part="train"
    # by default, so one "train" split of everything is what a plain get_train_dataset needs
    splits: dict[str, float] = field(default_factory=lambda: {"train": 1.0})
    workers: int = 4  # shards indexed in parallel by energon (each reads one tar's headers)

    def check(self) -> None:
        if not self.splits:
            raise ExportError("at least one split is needed, e.g. --split train=1")
        for name, ratio in self.splits.items():
            if not re.match(r"^[A-Za-z0-9_-]+$", name) or not ratio > 0:
                raise ExportError(f"a split is NAME=RATIO with a positive ratio, got {name}={ratio}")


def parse_splits(values: list[str]) -> dict[str, float]:
    """``["train=0.98", "val=0.02"]`` → ``{"train": 0.98, "val": 0.02}`` (clear error otherwise)."""
    splits = {}
    for value in values:
        name, sep, ratio = value.partition("=")
        try:
            splits[name] = float(ratio)
        except ValueError:
            raise ExportError(f"a split is NAME=RATIO (for example train=0.98), got {value!r}") from None
        if not sep:
            raise ExportError(f"a split is NAME=RATIO (for example train=0.98), got {value!r}")
    return splits


def run_export_energon(dataset: str, config: EnergonExportConfig | None = None, log=print) -> dict:
    """Write ``DATASET/.nv-meta``; returns a summary (shards, samples per split, files)."""
    config = config or EnergonExportConfig()
    config.check()
    if is_s3(dataset) or "://" in dataset:
        raise ExportError(f"export energon writes .nv-meta beside the shards and needs a local dataset, got "
                          f"{dataset!r} (run it where the dataset is mounted, then copy .nv-meta up)")
    try:
        from megatron.energon import __version__ as energon_version
        from megatron.energon.flavors import BaseWebdatasetFactory
    except ImportError:
        raise ExportError(f"megatron-energon is not installed: pip install {ENERGON_PIN}") from None
    storage = Storage.for_uri(dataset)
    read_dataset_json(storage)  # refuse what is not a dataset
    shards = sorted(committed_shards(storage))
    if not shards:
        raise ExportError(f"{storage.root} has no committed shards: nothing for energon to index")
    root = os.path.abspath(storage.root)
    with contextlib.redirect_stdout(io.StringIO()):  # energon prints progress lines of its own
        parts = BaseWebdatasetFactory.prepare_dataset(
            root, shards, split_parts_ratio=list(config.splits.items()), shuffle_seed=None,
            workers=max(1, min(config.workers, len(shards))))
    meta = os.path.join(root, NV_META)
    tmp = os.path.join(meta, ".dataset.yaml.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("# written by `longvid export energon`: samples are dicts of mp4 (AVDecoder) and json (dict)\n")
        yaml.safe_dump(DATASET_YAML, f, sort_keys=False)
    os.replace(tmp, os.path.join(meta, "dataset.yaml"))
    with open(os.path.join(meta, "split.yaml"), encoding="utf-8") as f:
        split_parts = yaml.safe_load(f)["split_parts"]
    summary = {"dataset": root, "energon": energon_version, "shards": len(shards), "parts": sorted(parts),
               "splits": {name: len(files) for name, files in split_parts.items()},
               "files": sorted(os.listdir(meta))}
    log(format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    splits = ", ".join(f"{name}: {n} shard pattern(s)" for name, n in summary["splits"].items())
    return "\n".join([
        f"energon metadata (megatron-energon {summary['energon']}) for {summary['shards']} shard(s) -> "
        f"{os.path.join(summary['dataset'], NV_META)}",
        f"  members: {', '.join(summary['parts'])}; splits: {splits}",
        f"  files: {', '.join(summary['files'])}",
        f"  open with megatron.energon.get_train_dataset({summary['dataset']!r}, ...) and a Cooker for the crude samples",
    ])
