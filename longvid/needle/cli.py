"""``longvid needle build DATASET --out BENCH`` and ``longvid needle eval BENCH --model CHECKPOINT``
(see docs/needle.md). Parses flags into the typed configs; bad input exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from ..shards.dataset import DatasetError
from ..shards.seekio import DecodeError
from .benchmark import BuildError, NeedleBuildConfig, build
from .evaluation import EvalError, NeedleEvalConfig, evaluate
from .haystack import HaystackError

BUILD_EPILOG = """output:
  BENCH/items.jsonl    one item a line: id, kind, hops, depth, haystack_frames, needle_positions, question,
                       options, answer, questions (multi hop: chain + final), haystack (the plan into the shards)
  BENCH/needles/*.png  needle pictures
  BENCH/bench.json     the recipe (written last)
  BENCH/media/         with --export-media: <id>.mp4 at 1 fps and questions.jsonl

examples:
  longvid needle build /data/corpus --out bench/niah
  longvid needle build /data/corpus --out bench/small --frames 200,400 --depths 0,0.5,1 --hops 5-7 --seed 1
  longvid needle build /data/corpus --out bench/mine --needles needles.jsonl --export-media
"""

EVAL_EPILOG = """output (in --out, default BENCH/eval/<model name>[-pivotkv][-nohico]):
  scored.jsonl   one line per scored item (appended; a rerun skips what is there)
  results.json   accuracy by length x depth, multi-hop scores, frames/s, peak memory
  heatmap.png    single-hop accuracy by length and depth

examples:
  longvid needle eval bench/niah --model runs/stage3
  longvid needle eval bench/niah --model runs/stage3 --pivotkv --limit 12
"""


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    try:
        return [int(lo), int(hi or lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI (e.g. 5-7), got {text!r}") from None


def _help(cls, name: str) -> str:
    from ..config import _field_comments

    return _field_comments(cls).get(name, "")


def register(subparsers) -> None:
    needle = subparsers.add_parser("needle", help="needle-in-a-video-haystack benchmarks: build from a dataset, "
                                   "score a model", description="Single- and multi-hop needle-in-a-video-haystack "
                                   "benchmarks (VideoChat-Flash) built from any ingested dataset.")
    commands = needle.add_subparsers(dest="needle_command", metavar="COMMAND")
    needle.set_defaults(func=lambda args: (needle.print_help(), 2)[1])

    p = commands.add_parser("build", help="plan haystacks, make needles and questions, write BENCH",
                            epilog=BUILD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset root written by `longvid ingest`: a folder or s3://bucket/prefix")
    p.add_argument("--out", required=True, help="benchmark folder to write")
    d = NeedleBuildConfig()
    h = lambda name: f"{_help(NeedleBuildConfig, name)} (default {getattr(d, name)})"  # noqa: E731
    p.add_argument("--frames", type=_ints, default=d.frames, help=h("frames"))
    p.add_argument("--depths", type=_floats, default=d.depths, help=h("depths"))
    p.add_argument("--hops", type=_range, default=d.hops, help=h("hops") + "; as LO-HI")
    p.add_argument("--per-depth", type=int, default=d.per_depth, help=h("per_depth"))
    p.add_argument("--multi-per-length", type=int, default=d.multi_per_length, help=h("multi_per_length"))
    p.add_argument("--seed", type=int, default=d.seed, help=h("seed"))
    p.add_argument("--needles", default="", metavar="MANIFEST", help=h("needles"))
    p.add_argument("--needle-size", type=int, default=d.needle_size, help=h("needle_size"))
    p.add_argument("--export-media", action="store_true", help=_help(NeedleBuildConfig, "export_media"))
    p.add_argument("--media-size", type=int, default=d.media_size, help=h("media_size"))
    p.set_defaults(func=cmd_build)

    p = commands.add_parser("eval", help="score a checkpoint on BENCH (resumable)", epilog=EVAL_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", help="a folder written by `longvid needle build`")
    e = NeedleEvalConfig()
    h = lambda name: f"{_help(NeedleEvalConfig, name)} (default {getattr(e, name)!r})"  # noqa: E731
    p.add_argument("--model", required=True, help=_help(NeedleEvalConfig, "model"))
    p.add_argument("--out", default="", help=_help(NeedleEvalConfig, "out"))
    p.add_argument("--dataset", default="", help=_help(NeedleEvalConfig, "dataset"))
    p.add_argument("--pivotkv", action="store_true", help=_help(NeedleEvalConfig, "pivotkv"))
    p.add_argument("--chunk-frames", type=int, default=e.chunk_frames, help=h("chunk_frames"))
    p.add_argument("--max-input-length", type=int, default=e.max_input_length, help=h("max_input_length"))
    p.add_argument("--no-hico", action="store_true", help="no clip merging and no visual dropout (the comparison)")
    p.add_argument("--limit", type=int, default=0, help=h("limit"))
    p.add_argument("--max-new-tokens", type=int, default=e.max_new_tokens, help=h("max_new_tokens"))
    p.add_argument("--device", default=e.device, help=h("device"))
    p.add_argument("--dtype", default=e.dtype, help=h("dtype"))
    p.set_defaults(func=cmd_eval)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_build(args) -> int:
    names = {f.name for f in fields(NeedleBuildConfig)}
    config = NeedleBuildConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        bench = build(args.dataset, args.out, config, log=_log)
    except (BuildError, HaystackError, DatasetError, DecodeError, OSError) as exc:
        print(f"longvid needle build: {exc}", file=sys.stderr)
        return 2
    print(f"{bench['items']} items ({bench['questions']} questions) at {bench['lengths']} frames in {args.out}")
    return 0


def cmd_eval(args) -> int:
    config = NeedleEvalConfig(model=args.model, out=args.out, dataset=args.dataset, pivotkv=args.pivotkv,
                              chunk_frames=args.chunk_frames, max_input_length=args.max_input_length,
                              hico=not args.no_hico, limit=args.limit, max_new_tokens=args.max_new_tokens,
                              device=args.device, dtype=args.dtype)
    try:
        results = evaluate(args.bench, config, log=_log)
    except (BuildError, EvalError, HaystackError, DecodeError, FileNotFoundError) as exc:
        print(f"longvid needle eval: {exc}", file=sys.stderr)
        return 2
    single, multi = results["single_hop"]["accuracy"], results["multi_hop"]["score"]
    print(f"single hop {single if single is not None else '-'}, multi hop {multi if multi is not None else '-'}, "
          f"{results['frames_per_s']} frames/s, peak {results['peak_memory_mb']} MB")
    return 0
