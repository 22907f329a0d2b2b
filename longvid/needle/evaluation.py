"""``longvid needle eval``: score the bundled video LLM on a built benchmark.

Per item: seek-decode the planned haystack frames from the shards (once per haystack), insert the
needles, ask each question through ``longvid ask``'s path (its model loading, prompt and
``VideoLLM.answer``), parse the chosen letter, append one line to ``scored.jsonl``. A rerun skips
the items already there. At the end: ``results.json`` and ``heatmap.png``.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..shards.seekio import DecodeStats
from ..shards.storage import LocalStorage, Storage
from . import benchmark as bench_io
from . import haystack as hay
from . import render, score
from .items import mcq_prompt

SCORED_FILE, RESULTS_FILE, HEATMAP_FILE, RUN_FILE = "scored.jsonl", "results.json", "heatmap.png", "run.json"


class EvalError(ValueError):
    """A run that cannot go on: a different recipe in the output folder, an unreadable benchmark."""


@dataclass
class NeedleEvalConfig:
    model: str = ""  # a saved model folder, a checkpoint folder or a training run (as `longvid ask` takes)
    out: str = ""  # results folder; empty: BENCH/eval/<model folder name>[-pivotkv][-nohico]
    dataset: str = ""  # dataset root; empty: the one bench.json names (set it when the dataset moved)
    pivotkv: bool = False  # ReTaKe's chunked prefill with KV compression instead of the dropout plan
    chunk_frames: int = 32  # PivotKV frames per chunk (ReTaKe's 32)
    max_input_length: int = 32000  # PivotKV keep ratio = this / input length (ReTaKe's default)
    hico: bool = True  # False: no clip merging and no visual dropout (the uncompressed comparison)
    limit: int = 0  # score at most this many items (in file order); 0: all
    max_new_tokens: int = 16  # a letter is all that is asked; a little room for "The answer is (B)"
    device: str = "auto"  # cpu, cuda, or auto
    dtype: str = "auto"  # float32, bfloat16, or auto (bfloat16 on GPUs)

    def recipe(self) -> dict:
        """What decides an item's score: a resumed run must have the same."""
        fields = asdict(self)
        return {k: fields[k] for k in ("model", "pivotkv", "chunk_frames", "max_input_length", "hico",
                                       "max_new_tokens", "dtype")}


def default_out(bench_dir: str, config: NeedleEvalConfig) -> str:
    name = os.path.basename(os.path.normpath(config.model)) or "model"
    return os.path.join(bench_dir, "eval", name + ("-pivotkv" if config.pivotkv else "") + ("" if config.hico else "-nohico"))


def answer_question(model, frames, prompt: str, config: NeedleEvalConfig) -> str:
    """The model's reply to one question about ``frames`` (uint8 [T, S, S, 3]): ``VideoLLM.answer``,
    as `longvid ask` calls it. The one place the eval touches the model's generation."""
    import torch

    from ..model.pivotkv import PivotKVConfig

    pivotkv = PivotKVConfig(config.chunk_frames, config.max_input_length) if config.pivotkv else None
    result = model.answer(torch.from_numpy(frames), prompt, config.max_new_tokens, pivotkv=pivotkv,
                          dropout=config.hico)
    return result["text"]


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the process's peak


def read_scored(path: str) -> list[dict]:
    """Lines already scored; a line cut short by a kill is dropped (its item is scored again)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _check_run(out: str, config: NeedleEvalConfig) -> None:
    path = os.path.join(out, RUN_FILE)
    recipe = config.recipe()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            theirs = json.load(f)
        if theirs != recipe:
            differ = sorted(k for k in set(recipe) | set(theirs) if theirs.get(k) != recipe.get(k))
            raise EvalError(f"{out} holds a run with other settings (differs in: {', '.join(differ)}); "
                            f"pass another --out or remove it")
    else:
        LocalStorage(out).write_bytes(RUN_FILE, (json.dumps(recipe, sort_keys=True, indent=2) + "\n").encode())


def evaluate(bench_dir: str, config: NeedleEvalConfig, model=None, log=print) -> dict:
    """Score the benchmark at ``bench_dir``; ``model`` (a VideoLLM) overrides loading ``config.model``
    (benchmarks build random models in memory). Returns the results written to ``results.json``."""
    bench, records = bench_io.read_bench(bench_dir)
    out = config.out or default_out(bench_dir, config)
    if model is None:
        from ..model.cli import resolve_model_dir

        resolve_model_dir(config.model)  # a missing model fails before run.json names it
    os.makedirs(out, exist_ok=True)
    _check_run(out, config)
    scored_path = os.path.join(out, SCORED_FILE)
    done = {row["id"] for row in read_scored(scored_path)}
    todo = records[: config.limit] if config.limit else records
    pending = [r for r in todo if r["id"] not in done]
    log(f"{len(todo)} items: {len(todo) - len(pending)} already scored, {len(pending)} to go")
    if pending:
        model = model if model is not None else _load(config)
        _score_items(Storage.for_uri(config.dataset or bench["dataset"]), bench_dir, pending, model, config,
                     scored_path, len(todo) - len(pending), len(todo), log)
    wanted = {r["id"] for r in todo}
    scored = [row for row in read_scored(scored_path) if row["id"] in wanted]
    results = dict(score.summarise({r["id"]: r for r in records}, scored), bench=os.path.abspath(bench_dir),
                   run=config.recipe(), lengths=bench["lengths"], depths=bench["recipe"]["depths"])
    LocalStorage(out).write_bytes(RESULTS_FILE, (json.dumps(results, sort_keys=True, indent=2) + "\n").encode())
    LocalStorage(out).write_bytes(HEATMAP_FILE, render.png_bytes(heatmap_image(results)))
    log(f"results: {os.path.join(out, RESULTS_FILE)}, heatmap: {os.path.join(out, HEATMAP_FILE)}")
    return results


def _load(config: NeedleEvalConfig):
    from ..model.cli import _quiet_transformers, load_model

    _quiet_transformers()
    model = load_model(config.model, config.device, config.dtype)
    if not config.hico:
        model.set_hico(replace(model.config.hico, merge=False, dropout=False))
    return model


def _score_items(storage: Storage, bench_dir: str, pending: list[dict], model, config: NeedleEvalConfig,
                 scored_path: str, already: int, total: int, log) -> None:
    import torch

    from ..model.cli import ask_prompt

    device = next(model.parameters()).device
    size = model.vision.image_size
    cache: tuple[str, np.ndarray] | None = None  # the last decoded haystack: items of a length share it
    stats = DecodeStats()
    with open(scored_path, "a", encoding="utf-8") as sink:
        for number, record in enumerate(pending, already + 1):
            began = time.perf_counter()
            key = json.dumps(record["haystack"], sort_keys=True)
            if cache is None or cache[0] != key:
                cache = (key, hay.decode_haystack(storage, record["haystack"], size, stats))
            frames = bench_io.item_frames(storage, bench_dir, record, size, haystack=cache[1])
            decoded = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            replies, choices, correct = [], [], []
            for q in record["questions"]:
                reply = answer_question(model, frames, ask_prompt(len(frames), len(frames), mcq_prompt(q)), config)
                choice = score.parse_choice(reply, q["options"])
                replies.append(reply)
                choices.append(choice)
                correct.append(choice == q["answer"])
            model_s = time.perf_counter() - decoded
            row = {"id": record["id"], "replies": replies, "choices": choices, "correct": correct,
                   "score": score.item_score(correct), "frames": len(frames), "frames_asked": len(frames) * len(replies), "decode_s": round(decoded - began, 3),
                   "model_s": round(model_s, 3), "peak_mb": round(_peak_mb(device), 1)}
            sink.write(json.dumps(row, sort_keys=True) + "\n")
            sink.flush()
            log(f"[{number}/{total}] {record['id']}: score {row['score']:.2f} (chose {choices}, answer "
                f"{[q['answer'] for q in record['questions']]}), {len(frames)} frames in {model_s:.1f} s "
                f"({row['frames_asked'] / max(model_s, 1e-9):.0f} frames/s), peak {row['peak_mb']:.0f} MB")


def heatmap_image(results: dict) -> np.ndarray:
    """Single-hop accuracy by haystack length (rows) and depth (columns), as in the paper's figure."""
    table = results["single_hop"]["by_length_depth"]
    rows = [str(n) for n in results["lengths"]]
    columns = [f"{d:g}" for d in results["depths"]]
    values = {(r, c): table.get(r, {}).get(c) for r in rows for c in columns}
    return render.heatmap(values, rows, columns, "NEEDLE ACCURACY %", "FRAMES", "DEPTH")
