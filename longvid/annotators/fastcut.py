"""The fast CPU shot detector: hard cuts and gradual transitions from streamed 48x27 thumbnails.

Frames arrive one by one, are processed in blocks (vectorized features, no per-frame Python
work) and decided with a fixed delay, so memory stays bounded for any length of video. It must
never fire on a flash (a change that goes away within a few frames), a pan (a motion-compensated
distance) or sustained fast motion (a change no larger than its neighbourhood's).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from .shot_features import Features, colour_distance, compute_features, cut_distance
from .shots import ShotDetector


@dataclass
class FastCutConfig:
    block: int = 64  # frames per vectorized feature block (amortises numpy call overhead)
    decide_every: int = 256  # frames settled per decision step (its window has ~200 frames of context)
    cut_threshold: float = 0.15  # cut distance always needed (static-scene noise ~0.02; busier shots rely on the ratio)
    cut_ratio: float = 3.0  # ... and this multiple of the local baseline (median of neighbours each side)
    baseline_radius: int = 12  # neighbours on each side for the baseline (~0.5 s at 25 fps)
    flash_frames: int = 4  # a change that reverts within this many frames is a flash, not a cut
    gradual_scales: tuple[int, ...] = (3, 6, 10, 16, 24)  # half-widths of the windows for gradual transitions (6-48 frames)
    gradual_threshold: float = 0.20  # colour distance across a gradual transition always needed
    gradual_ratio: float = 2.5  # ... and this multiple of the change just before / just after it
    gradual_sure: float = 0.30  # below this distance (fast pans reach ~0.25) the change must be ...
    gradual_sure_ratio: float = 4.0  # ... this many times the change beside it
    min_shot_frames: int = 6  # no two boundaries closer than this (a shot of 0.25 s at 25 fps)
    dark_level: float = 0.08  # mean luma under which a frame counts as black (fade transitions)


class Series:
    """Growable float32 columns indexed by absolute frame number; old rows can be dropped."""

    def __init__(self, names: list[str]):
        self.start = 0  # absolute frame number of row 0
        self.data = {name: np.zeros(0, dtype=np.float32) for name in names}

    def end(self, name: str) -> int:
        return self.start + len(self.data[name])

    def append(self, name: str, values: np.ndarray) -> None:
        self.data[name] = np.concatenate([self.data[name], values.astype(np.float32)])

    def window(self, name: str, lo: int, hi: int, fill: float = np.nan) -> np.ndarray:
        """Rows ``[lo, hi)``; rows outside what is kept read as ``fill``."""
        out = np.full(hi - lo, fill, dtype=np.float32)
        col = self.data[name]
        a, b = max(lo, self.start), min(hi, self.start + len(col))
        if b > a:
            out[a - lo : b - lo] = col[a - self.start : b - self.start]
        return out

    def drop_before(self, frame: int) -> None:
        cut = max(0, frame - self.start)
        if cut:
            self.data = {k: v[cut:] for k, v in self.data.items()}
            self.start += cut


def _rolling_median(x: np.ndarray, lo_offset: int, hi_offset: int) -> np.ndarray:
    """For each i, the median of ``x[i + lo_offset : i + hi_offset]``; unknown values (before the
    first or after the last frame) count as the window's typical value."""
    n = len(x)
    known = x[~np.isnan(x)]
    typical = float(np.median(known)) if known.size else 0.0
    x = np.where(np.isnan(x), typical, x)
    padded = np.concatenate([np.full(max(0, -lo_offset), typical), x, np.full(max(0, hi_offset), typical)])
    start = max(0, -lo_offset) + lo_offset
    view = np.lib.stride_tricks.sliding_window_view(padded, hi_offset - lo_offset)[start : start + n]
    return np.median(view, axis=1)


class FastCutDetector(ShotDetector):
    name = "fast"

    def __init__(self, config: FastCutConfig | None = None):
        super().__init__()
        self.config = c = config or FastCutConfig()
        wide = {2 * k + 2 * c.flash_frames for k in c.gradual_scales}  # the same window, widened past a flash
        self.lags = sorted({1} | set(c.gradual_scales) | {2 * k for k in c.gradual_scales} | wide)
        self.lookback = max(self.lags) + 2 * c.flash_frames + 1  # feature frames kept for lagged distances
        self.delay = 3 * max(c.gradual_scales) + 2 * c.flash_frames + c.baseline_radius + 4  # frames a decision waits for
        self.series = Series(["cons", "cross", "bright"] + [f"lag{l}" for l in self.lags])
        self._block: np.ndarray | None = None
        self._fill = 0
        self._tail: Features | None = None  # features of the last `lookback` frames
        self.frames = 0  # frames whose features are in the series
        self._decided = 0  # frames whose fate is settled
        self._cross_done = 0
        self._events: list[dict] = []  # accepted boundaries: frame, kind, span, strength
        # set by a caller that needs them after the decisions (a sparse stride pass): the colour distance
        # from each frame to the one before and each frame's brightness, for every frame (8 bytes a frame)
        self.history: dict[str, array] | None = None

    def keep_history(self) -> None:
        self.history = {"lag1": array("f"), "bright": array("f")}

    # -- streaming --------------------------------------------------------------------------------

    def update(self, thumb: np.ndarray) -> None:
        if self._block is None:
            self._block = np.empty((self.config.block,) + thumb.shape, dtype=np.uint8)
        self._block[self._fill] = thumb
        self._fill += 1
        if self._fill == self.config.block:
            self._ingest(self._block[: self._fill])
            self._fill = 0

    def finish(self) -> list[int]:
        if self._fill:
            self._ingest(self._block[: self._fill])
            self._fill = 0
        self._cross(final=True)
        self._decide(self.frames, final=True)
        self.transitions = [{"start_frame": e["start"], "end_frame": e["end"], "kind": e["kind"]} for e in self._events]
        return [e["frame"] for e in self._events]

    def _ingest(self, thumbs: np.ndarray) -> None:
        new = compute_features(thumbs)
        feats = new if self._tail is None else Features.concat([self._tail, new])
        base = self.frames - (len(feats) - len(new))  # absolute frame of feats[0]
        idx = np.arange(self.frames, self.frames + len(new)) - base  # rows of the new frames
        prev = np.maximum(idx - 1, 0)
        cons = cut_distance(feats.take(prev), feats.take(idx))
        if self.frames == 0:
            cons[0] = 0.0
        self.series.append("cons", cons)
        self.series.append("bright", new.brightness)
        for lag in self.lags:
            back = idx - lag
            d = colour_distance(feats.take(np.maximum(back, 0)), feats.take(idx))
            self.series.append(f"lag{lag}", np.where(back >= 0, d, np.nan))
        if self.history is not None:
            self.history["lag1"].extend(self.series.data["lag1"][-len(new):].tolist())
            self.history["bright"].extend(new.brightness.tolist())
        self.frames += len(new)
        self._window, self._window_base = feats, base  # what _cross may look at
        self._cross(final=False)
        self._tail = feats.take(slice(max(0, len(feats) - self.lookback), len(feats)))
        if self.frames - self.delay - self._decided >= self.config.decide_every:
            self._decide(self.frames - self.delay, final=False)

    def _cross(self, final: bool) -> None:
        """``cross[t]``: the smallest cut distance between a frame before ``t`` and one from ``t`` on,
        within ``flash_frames``; a flash (a change that reverts) makes it small. Only computed where
        the plain distance could be a cut; elsewhere it is the plain distance."""
        f = self.config.flash_frames
        hi = self.frames if final else self.frames - f + 1
        lo = self._cross_done
        if hi <= lo:
            return
        cons = self.series.window("cons", lo, hi)
        cross = cons.copy()
        cand = np.nonzero(cons > self.config.cut_threshold)[0] + lo
        if len(cand):
            pairs = [(t, i, j) for t in cand for i in range(t - f, t) for j in range(t, t + f)
                     if i >= max(0, self._window_base) and j < self.frames and (i, j) != (t - 1, t)]
            if pairs:
                arr = np.array(pairs)
                rows = arr[:, 1:] - self._window_base
                d = cut_distance(self._window.take(rows[:, 0]), self._window.take(rows[:, 1]))
                for t, value in zip(arr[:, 0], d):
                    cross[t - lo] = min(cross[t - lo], value)
        self.series.append("cross", cross)
        self._cross_done = hi

    # -- decisions --------------------------------------------------------------------------------

    def _decide(self, upto: int, final: bool) -> None:
        """Settle frames ``[_decided, upto)`` using the series around them."""
        c = self.config
        upto = min(upto, self._cross_done)
        lo = self._decided
        if upto <= lo:
            return
        margin = self.delay
        a, b = lo - margin, upto + margin
        cons = self.series.window("cons", a, b)
        cross = self.series.window("cross", a, b)
        baseline = 0.5 * (_rolling_median(cons, -c.baseline_radius - 1, -1)
                          + _rolling_median(cons, 2, c.baseline_radius + 2))
        band = self.check_band()
        floor = band[0] if band else 1.0  # candidates below their thresholds are kept only to be checked
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.fmin(cross / c.cut_threshold, cross / (c.cut_ratio * baseline))
            local_max = np.ones(len(cons), dtype=bool)
            for s in (1, 2):
                local_max &= ~(cons < np.roll(cons, s)) & ~(cons <= np.roll(cons, -s))
        is_cut = (confidence >= 1.0) & local_max
        events = [(int(t) + a, "cut", (0, 0), float(cross[t]), float(confidence[t]))
                  for t in np.nonzero((confidence >= floor) & local_max)[0]]
        events += self._gradual_candidates(a, b, is_cut, floor)
        events = [e for e in sorted(events) if lo <= e[0] < upto]
        if band:
            unsure = [e for e in events if e[4] < band[1]]
            verdict = dict(zip(unsure, self.verify(unsure))) if unsure else {}
            events = [e for e in events if verdict.get(e, True)]
        else:
            events = [e for e in events if e[4] >= 1.0]
        for frame, kind, k, strength, _ in events:
            self._accept(frame, kind, k, strength)
        self._decided = upto
        keep_from = upto - 2 * margin
        self.series.drop_before(keep_from)

    def check_band(self) -> tuple[float, float] | None:
        """Confidence band ``[low, high)`` of candidates that :meth:`verify` must settle (none here)."""
        return None

    def verify(self, candidates: list[tuple]) -> list[bool]:
        raise NotImplementedError

    def _gradual_candidates(self, a: int, b: int, is_cut: np.ndarray, floor: float) -> list[tuple]:
        """Frames where the colour change across ``[t-k, t+k]`` dwarfs the change just before and just
        after (at the best-scoring frame of its neighbourhood, away from hard cuts)."""
        c = self.config
        out = []
        for k in c.gradual_scales:
            cut_near = np.convolve(is_cut.astype(np.float32), np.ones(2 * k + 1), "same") > 0
            f = c.flash_frames
            across = np.fmin(self.series.window(f"lag{2 * k}", a + k, b + k),  # D(t-k, t+k), and the
                             self.series.window(f"lag{2 * k + 2 * f}", a + k + f, b + k + f))  # same widened: a flash can't be in both
            before = self.series.window(f"lag{k}", a - k, b - k)  # D(t-2k, t-k)
            after = self.series.window(f"lag{k}", a + 2 * k, b + 2 * k)  # D(t+k, t+2k)
            side = np.fmax(before, after)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = across / side
                confidence = np.fmin(np.fmin(across / c.gradual_threshold, ratio / c.gradual_ratio),
                                     np.fmax(across / c.gradual_sure, ratio / c.gradual_sure_ratio))
            confidence = np.where(np.isnan(confidence), -np.inf, confidence)
            padded = np.concatenate([np.full(k, -np.inf), confidence, np.full(k, -np.inf)])
            peak = np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1).max(axis=1)
            for t in np.nonzero((confidence >= floor) & (confidence >= peak) & ~cut_near)[0]:
                centre, start, end = self._centre(int(t) + a, k)
                out.append((centre, "gradual", (start, end), float(across[t]), float(confidence[t])))
        return out

    def _centre(self, t: int, k: int) -> tuple[int, int, int]:
        """Middle and span of the change inside ``[t-k, t+k]``: where the lag-1 colour change above
        its floor has its mass (the middle 90% of it)."""
        d = np.nan_to_num(self.series.window("lag1", t - k + 1, t + k + 1))
        w = np.maximum(d - np.median(d), 0)
        if w.sum() <= 0:
            return t, t - k, t + k
        frames = np.arange(t - k + 1, t + k + 1)
        mass = np.cumsum(w) / w.sum()
        start, end = int(frames[np.searchsorted(mass, 0.05)]), int(frames[np.searchsorted(mass, 0.95)]) + 1
        return int(round(float((frames * w).sum() / w.sum()))), start, end

    def _fade_extent(self, start: int, end: int) -> tuple[int, int]:
        """Grow a span that touches black frames over the fade around them: back while the picture
        brightens going back (fade-out), forward while it brightens going forward (fade-in)."""
        c = self.config
        reach = 2 * max(c.gradual_scales)
        bright = self.series.window("bright", start - reach, end + reach + 1, fill=np.nan)
        lo, hi = reach - 2, len(bright) - reach + 1  # the span, with 2 frames of slack
        dark = np.nonzero(np.nan_to_num(bright[lo:hi], nan=1.0) < c.dark_level)[0]
        if not dark.size:
            return start, end
        first, last = lo + int(dark[0]), lo + int(dark[-1])
        while first > 0 and bright[first - 1] > bright[first] + 0.001:
            first -= 1
        while last + 1 < len(bright) and bright[last + 1] > bright[last] + 0.001:
            last += 1
        return min(start, start - reach + first), max(end, start - reach + last + 1)

    def _accept(self, frame: int, kind: str, span: tuple[int, int] | int, strength: float) -> None:
        """Add a boundary, or merge it with the previous one when their frame spans touch (a cut into
        black followed by a fade-in is one transition; a long fade is found at two scales)."""
        c = self.config
        if frame <= 0:
            return
        start, end = (frame, frame) if kind == "cut" else (max(0, min(span[0], frame)), max(span[1], frame + 1))
        start, end = self._fade_extent(start, end)
        if kind == "cut" and end > start:
            kind = "gradual"  # a cut into or out of a fade: the fade is the transition
        event = {"frame": frame, "kind": kind, "start": start, "end": end, "strength": strength}
        if self._events and start - self._events[-1]["end"] < c.min_shot_frames:
            last = self._events.pop()
            cuts = [e for e in (last, event) if e["kind"] == "cut"]
            merged = {"start": min(last["start"], start), "end": max(last["end"], end),
                      "strength": max(last["strength"], strength)}
            if cuts:
                merged["frame"] = max(cuts, key=lambda e: e["strength"])["frame"]
            else:
                merged["frame"] = (merged["start"] + merged["end"]) // 2
            merged["kind"] = "cut" if len(cuts) == 2 else "gradual"
            event = merged
        if event["kind"] != "cut":
            dark = self.series.window("bright", event["start"], event["end"], fill=1.0)
            event["kind"] = "fade" if dark.size and float(np.nanmin(dark)) < c.dark_level else "dissolve"
        self._events.append(event)
