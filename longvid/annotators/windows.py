"""Windowed segmentation of one long video: plan windows, segment each on its own (a seek to the
keyframe before it, no full read), stitch them back into one result.

Each window owns a core span of frames and decodes an overlap on both sides, so the detector has
the same context at the core's edges as a single pass; a transition near an edge is reported by both
neighbours and kept once (from the window that saw more context around it). Pure functions, no Ray:
``pipelines.segment_parallel`` runs the windows as tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .coarse_signals import concatenate, cut, scan_with_signals
from .sparse import Scan

MIN_OVERLAP_FRAMES = 300  # the fast detector decides with ~100 frames of delay and looks ~100 frames back


@dataclass
class WindowConfig:
    # a video longer than this is segmented in parallel windows (when the pipeline runs on Ray): 10 min
    # is where one task's decode (~1 min at 640x360 on a core) starts to hold up a whole batch of videos
    parallel_above_seconds: float = 600.0
    window_seconds: float = 300.0  # core length of a window: 4 tasks for a 20-min video, ~1% overlap cost at 10 s
    # frames decoded beyond each side of a core (at least MIN_OVERLAP_FRAMES), so a shot or a dissolve
    # that crosses an edge sees the same context as in one pass
    overlap_seconds: float = 10.0
    # logical CPUs each window task asks Ray for: a window is one decode, about a core. The window count
    # fills whole rounds of the slots that leaves (the CPUs no actor pool holds / task_cpus), so on 2
    # cores 4 windows run 2 at a time in the workers already started; at 0.5, 4 ran at once and 2 more
    # worker processes had to start (~2 CPU-seconds each) while the windows ran (ingest 0.73x vs 0.84x)
    task_cpus: float = 1.0


@dataclass
class Window:
    decode_start: int  # first frame decoded (the seek lands on the keyframe at or before it)
    core_start: int  # first frame this window owns
    core_end: int  # first frame it no longer owns
    decode_end: int  # first frame not decoded


def plan_windows(num_frames: int, fps: float, config: WindowConfig, cpus: int = 0) -> list[Window]:
    """Equal cores of about ``window_seconds`` covering ``[0, num_frames)``, each with its overlap. With
    ``cpus`` (the window tasks that can run at once), the count moves by fewer than ``cpus`` to the one
    that finishes soonest in rounds of ``cpus`` (a 21.6-min video on 2 slots: 4 windows, 2 rounds, not
    5 in 3), but never to cores shorter than half ``window_seconds``: on a 128-CPU cluster an hour is
    24 windows, not 128 whose overlaps would cost as much as their cores."""
    core = max(1, int(round(config.window_seconds * fps)))
    count = max(1, math.ceil(num_frames / core))
    if cpus > 1 and count > 1:
        most = max(count, num_frames // max(1, core // 2))
        count = min(range(max(1, count - cpus + 1), min(count + cpus, most + 1)),
                    key=lambda k: (math.ceil(k / cpus) / k, k))
    overlap = max(MIN_OVERLAP_FRAMES, int(math.ceil(config.overlap_seconds * fps)))
    edges = [round(i * num_frames / count) for i in range(count + 1)]
    return [Window(max(0, a - overlap), a, b, min(num_frames, b + overlap)) for a, b in zip(edges[:-1], edges[1:])]


def segment_window(source, window: Window, decode, sparse, detector) -> Scan:
    """One window's scan (see :func:`annotators.sparse.scan`), cut down to what the window owns: the
    frames of its core (with their motion and pHashes), and the transitions whose boundary is within half an overlap of it (the
    stitch picks among neighbours' duplicates)."""
    result = scan_with_signals(source, decode, sparse, detector, start=window.decode_start, end=window.decode_end)
    keep = (result.frames >= window.core_start) & (result.frames < window.core_end)
    reach_lo = (window.core_start + window.decode_start) // 2 if window.decode_start else 0
    reach_hi = (window.core_end + window.decode_end + 1) // 2
    transitions = []
    for t in result.transitions:
        if reach_lo <= t["frame"] < reach_hi:
            # context: frames decoded on the nearer side (an edge of the video counts as full context)
            before = t["frame"] - window.decode_start if window.decode_start else math.inf
            after = window.decode_end - t["frame"] if window.decode_end > window.core_end else math.inf
            transitions.append(dict(t, context=min(before, after), owned=window.core_start <= t["frame"] < window.core_end))
    return Scan(result.frames[keep], result.distances[keep], transitions, result.decoded, result.error,
                result.end, result.sparse, skip=result.skip, signals=cut(result.signals, keep))


def stitch(scans: list[Scan], min_gap: int) -> Scan:
    """One scan from the windows' scans in order. Transitions from different windows closer than
    ``min_gap`` frames are one transition, kept from the window with more context around it."""
    frames = np.concatenate([s.frames for s in scans]) if scans else np.zeros(0, np.int64)
    distances = np.concatenate([s.distances for s in scans]) if scans else np.zeros(0, np.float32)
    tagged = sorted((t["frame"], i, t) for i, s in enumerate(scans) for t in s.transitions)
    kept: list[tuple[int, dict]] = []
    for frame, i, t in tagged:
        if kept and kept[-1][0] != i and frame - kept[-1][1]["frame"] < min_gap:
            if (t["context"], t["owned"]) > (kept[-1][1]["context"], kept[-1][1]["owned"]):
                kept[-1] = (i, t)
            continue
        kept.append((i, t))
    # an unowned transition seen by one window only lies in a neighbour's core that did not confirm it
    transitions = [{k: t[k] for k in ("frame", "start_frame", "end_frame", "kind")}
                   for i, t in kept if t["owned"] or _confirmed(t, i, scans, min_gap)]
    error = next((s.error for s in scans if s.error), None)
    end = scans[-1].end if scans else 0
    return Scan(frames, distances, transitions, sum(s.decoded for s in scans), error, end,
                any(s.sparse for s in scans), skip=scans[0].skip if scans else "DEFAULT",
                signals=concatenate([s.signals for s in scans]))


def _confirmed(t: dict, i: int, scans: list[Scan], min_gap: int) -> bool:
    """Whether a transition outside window ``i``'s core was also seen by the window that owns it
    (it was, if the stitch dropped that window's copy for this one)."""
    for j, other in enumerate(scans):
        if j != i and any(abs(o["frame"] - t["frame"]) < min_gap for o in other.transitions):
            return True
    return False


def segment_windows(source, windows: list[Window], decode, sparse, make_detector) -> Scan:
    """All windows one after another in this process (what the Ray path does in parallel)."""
    return stitch([segment_window(source, w, decode, sparse, make_detector()) for w in windows],
                  min_gap=make_detector().config.min_shot_frames)
