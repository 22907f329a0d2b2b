"""``longvid needle build``: a needle-in-a-video-haystack benchmark from any ingested dataset.

Writes ``BENCH/items.jsonl`` (one item a line), ``BENCH/needles/*.png`` and ``BENCH/bench.json`` (the
recipe). Sorted keys, no timestamps, deterministic PNGs: the same seed gives byte-identical files.
``--export-media`` adds ``BENCH/media/<id>.mp4`` (1 fps) and ``BENCH/media/questions.jsonl``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field

import numpy as np

from ..shards.storage import LocalStorage, Storage
from . import haystack as hay
from . import items as it
from . import render

FORMAT = "longvid-needle"
FORMAT_VERSION = 1
ITEMS_FILE, BENCH_FILE, NEEDLES_DIR, MEDIA_DIR = "items.jsonl", "bench.json", "needles", "media"


class BuildError(ValueError):
    """Bad input to a build: a dataset too small for every length, a bad manifest, bad settings."""


@dataclass
class NeedleBuildConfig:
    frames: list[int] = field(default_factory=lambda: [1000, 2000, 5000, 10000])  # haystack lengths at 1 fps (the paper's)
    depths: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # single-hop depths (the paper's)
    hops: list[int] = field(default_factory=lambda: [5, 7])  # multi-hop needle count range, inclusive (SEEDS.md §5)
    per_depth: int = 1  # single-hop items per (length, depth): more needles per cell, less noise
    multi_per_length: int = 2  # multi-hop items per length (each draws its own needle count)
    seed: int = 0  # every draw (videos, needles, options) derives from it
    needles: str = ""  # manifest of single-hop needles (JSONL: image, question, options, answer); empty: generated
    needle_size: int = 224  # generated needle cards, pixels (a vision tower's usual input)
    export_media: bool = False  # also write each item as an MP4 + questions.jsonl for outside models
    media_size: int = 448  # square frame size of exported MP4s (VideoChat-Flash's larger input)

    def validate(self) -> None:
        if not self.frames or any(f <= 0 or f % it.CLIP for f in self.frames):
            raise BuildError(f"--frames: positive multiples of {it.CLIP} expected (whole clips), got {self.frames}")
        if any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise BuildError(f"--depths: values in 0..1 expected, got {self.depths}")
        if len(self.hops) != 2 or not 2 <= self.hops[0] <= self.hops[1] <= len(it.LABELS):
            raise BuildError(f"--hops: LO-HI with 2 <= LO <= HI <= {len(it.LABELS)} expected, got {self.hops}")
        if self.per_depth < 0 or self.multi_per_length < 0:
            raise BuildError("--per-depth and --multi-per-length must be >= 0")


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def read_manifest(path: str) -> list[dict]:
    """Needles of a JSONL manifest: ``image`` (relative to the manifest), ``question``, four ``options``,
    ``answer`` (a letter or the right option's text)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except OSError as exc:
        raise BuildError(f"--needles {path}: cannot read ({exc.strerror})") from exc
    base, needles = os.path.dirname(os.path.abspath(path)), []
    for number, line in enumerate(lines, 1):
        where = f"--needles {path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BuildError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("image", "question")):
            raise BuildError(f"{where}: needs string fields image and question")
        options = row.get("options")
        if not isinstance(options, list) or len(options) != 4 or len(set(map(str, options))) != 4:
            raise BuildError(f"{where}: options must be a list of 4 distinct choices")
        options = [str(o) for o in options]
        answer = str(row.get("answer", ""))
        if answer.upper() in it.LETTERS and len(answer) == 1:
            answer = answer.upper()
        elif answer in options:
            answer = it.LETTERS[options.index(answer)]
        else:
            raise BuildError(f"{where}: answer must be A-D or one of the options, got {answer!r}")
        image_path = row["image"] if os.path.isabs(row["image"]) else os.path.join(base, row["image"])
        try:
            image = render.read_image(image_path)
        except ValueError as exc:
            raise BuildError(f"{where}: {exc}") from exc
        needles.append({"image": image, "question": row["question"], "options": options, "answer": answer})
    if not needles:
        raise BuildError(f"--needles {path}: no needles in the manifest")
    return needles


class ItemBuilder:
    """Builds the items of one benchmark in a fixed order, collecting needle pictures to write."""

    def __init__(self, config: NeedleBuildConfig, manifest: list[dict] | None):
        self.config, self.manifest = config, manifest
        self.slots = it.AnswerSlots(config.seed)
        self.pictures: dict[str, np.ndarray] = {}  # needle file stem → picture
        self.manifest_order = (np.random.default_rng([config.seed, 0x6D616E]).permutation(len(manifest))
                               if manifest else None)
        self.manifest_used = 0

    def _picture(self, name: str, image: np.ndarray) -> dict:
        self.pictures[name] = image
        return {"image": f"{NEEDLES_DIR}/{name}.png"}

    def single(self, length: int, depth: float, repeat: int, plan: dict) -> dict:
        item_id = f"single-{length}-d{depth:g}-{repeat}"
        rng = it.item_rng(self.config.seed, item_id)
        if self.manifest:
            number = int(self.manifest_order[self.manifest_used % len(self.manifest)])
            self.manifest_used += 1
            entry = self.manifest[number]
            needle = dict(self._picture(f"manifest-{number}", entry["image"]), family="manifest", manifest_line=number + 1)
            questions = [it.question(entry["question"], entry["options"], entry["answer"], "manifest")]
        else:
            made, q = it.single_needle(item_id, rng, self.slots.next(), self.config.needle_size)
            needle, questions = dict(self._picture(made.name, made.image), **made.facts), [q]
        insert_at = [it.single_offset(depth, length)]
        return it.item_record(item_id, "single", depth, length, insert_at, [needle], questions, plan, self.config.seed)

    def multi(self, length: int, repeat: int, plan: dict) -> dict:
        item_id = f"multi-{length}-{repeat}"
        rng = it.item_rng(self.config.seed, item_id)
        lo, hi = self.config.hops
        hops = int(rng.integers(lo, hi + 1))
        made, questions = it.chain_needles(item_id, hops, rng, self.slots, self.config.needle_size)
        needles = [dict(self._picture(n.name, n.image), **n.facts) for n in made]
        return it.item_record(item_id, "multi", None, length, it.multi_offsets(hops, length), needles, questions,
                              plan, self.config.seed)


def build(dataset: str, out: str, config: NeedleBuildConfig, log=print) -> dict:
    """Plan haystacks, make needles and items, write the benchmark; returns the bench.json content."""
    config.validate()
    manifest = read_manifest(config.needles) if config.needles else None
    storage = Storage.for_uri(dataset)
    rows = hay.video_rows(storage, max(config.frames), config.seed)
    available = hay.available_frames(rows)
    lengths = [f for f in config.frames if f <= available]
    skipped = [{"frames": f, "reason": f"the dataset gives {available} frames at 1 fps"}
               for f in config.frames if f > available]
    if not lengths:
        raise BuildError(f"{dataset}: too small for a haystack of {min(config.frames)} frames (it gives {available} "
                         f"frames at 1 fps from {len(rows)} videos); ask for --frames {available // it.CLIP * it.CLIP} or less")
    for note in skipped:
        log(f"note: skipping haystack length {note['frames']}: {note['reason']}")
    builder = ItemBuilder(config, manifest)
    records = []
    for length in lengths:
        plan = hay.plan_haystack(rows, length, config.seed)
        for depth in config.depths:
            for repeat in range(config.per_depth):
                records.append(builder.single(length, depth, repeat, plan))
        for repeat in range(config.multi_per_length):
            records.append(builder.multi(length, repeat, plan))
        log(f"haystack {length} frames from {len(plan['segments'])} videos")
    bench = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "dataset": dataset, "recipe": asdict(config),
        "lengths": lengths, "skipped_lengths": skipped, "items": len(records),
        "questions": sum(len(r["questions"]) for r in records), "needle_frames": it.CLIP, "fps": 1,
    }
    write_bench(out, records, builder.pictures, bench)
    if config.export_media:
        export_media(storage, out, records, config.media_size, log)
    return bench


def write_bench(out: str, records: list[dict], pictures: dict[str, np.ndarray], bench: dict) -> None:
    """Needles first, items next, ``bench.json`` last (it marks a whole benchmark)."""
    local = LocalStorage(out)
    needles_dir = os.path.join(local.root, NEEDLES_DIR)
    if os.path.isdir(needles_dir) and os.path.isfile(os.path.join(local.root, BENCH_FILE)):
        shutil.rmtree(needles_dir)  # an earlier build of ours: its needles may not be this build's
    for name, image in sorted(pictures.items()):
        local.write_bytes(f"{NEEDLES_DIR}/{name}.png", render.png_bytes(image))
    local.write_bytes(ITEMS_FILE, "".join(dumps(r) + "\n" for r in records).encode())
    local.write_bytes(BENCH_FILE, (json.dumps(bench, sort_keys=True, indent=2) + "\n").encode())


def load_needles(bench_dir: str, record: dict, size: int) -> list[np.ndarray]:
    """An item's needle pictures, squared to ``size``."""
    return [hay.resize_frames(render.read_image(os.path.join(bench_dir, n["image"]))[None], size)[0]
            for n in record["needles"]]


def item_frames(storage: Storage, bench_dir: str, record: dict, size: int, haystack=None, stats=None) -> np.ndarray:
    """An item's final frame sequence (haystack decoded from the shards, needles inserted)."""
    frames = haystack if haystack is not None else hay.decode_haystack(storage, record["haystack"], size, stats)
    return hay.insert_needles(frames, load_needles(bench_dir, record, size), record["insert_at"], it.CLIP)


def export_media(storage: Storage, out: str, records: list[dict], size: int, log=print) -> None:
    """Each item as a 1-fps H.264 MP4 plus ``media/questions.jsonl`` (prompt text included)."""
    import av

    local = LocalStorage(out)
    os.makedirs(os.path.join(local.root, MEDIA_DIR), exist_ok=True)
    cache: tuple[str, np.ndarray] | None = None
    lines = []
    for record in records:
        key = dumps(record["haystack"])
        if cache is None or cache[0] != key:
            cache = (key, hay.decode_haystack(storage, record["haystack"], size))
        frames = item_frames(storage, out, record, size, haystack=cache[1])
        path = os.path.join(local.root, MEDIA_DIR, f"{record['id']}.mp4")
        tmp = path + ".partial.mp4"
        with av.open(tmp, mode="w") as container:
            stream = container.add_stream("libx264", rate=1)
            stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            for image in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
        lines.append(dumps({"id": record["id"], "video": f"{MEDIA_DIR}/{record['id']}.mp4", "fps": 1,
                            "frames": len(frames), "hops": record["hops"], "depth": record["depth"],
                            "needle_positions": record["needle_positions"], "questions": [
                                dict(q, prompt=it.mcq_prompt(q)) for q in record["questions"]]}))
        log(f"media {record['id']}: {len(frames)} frames")
    local.write_bytes(f"{MEDIA_DIR}/questions.jsonl", "".join(line + "\n" for line in lines).encode())


def read_bench(bench_dir: str) -> tuple[dict, list[dict]]:
    """``bench.json`` and the items of a built benchmark."""
    path = os.path.join(bench_dir, BENCH_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            bench = json.load(f)
        with open(os.path.join(bench_dir, ITEMS_FILE), encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise BuildError(f"{bench_dir}: not a needle benchmark ({exc}); build one with `longvid needle build`") from exc
    if bench.get("format") != FORMAT or bench.get("format_version", 0) > FORMAT_VERSION:
        raise BuildError(f"{bench_dir}: {BENCH_FILE} is not a {FORMAT} v{FORMAT_VERSION} benchmark")
    return bench, records
