"""A generated captioning set for tests, demos and benchmarks: each video is a coloured square moving
in one direction on a grey field, captioned by its colour and motion, so a model can learn it.

Frames follow the stage's dynamic_fps1 plan over a virtual video; every sample follows the stream's
contract. Deterministic from (seed, index); never used as real data.
"""

from __future__ import annotations

import numpy as np
import torch

from ..shards.sampling import frame_indices, time_prompt

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
QUESTION = "Describe the video."


class SyntheticCaptions:
    """An endless, epoch-shuffled stream of ``num_samples`` generated videos, sharded by rank."""

    def __init__(self, frames_lo: int = 4, frames_hi: int = 8, rank: int = 0, world_size: int = 1, seed: int = 0,
                 num_samples: int = 64, size: int = 32, fps: float = 1.0, seconds: tuple[float, float] = (8.0, 40.0)):
        self.frames_lo, self.frames_hi = frames_lo, frames_hi
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.num_samples, self.size, self.fps, self.seconds = num_samples, size, fps, tuple(seconds)
        self.epoch = 0
        self.position = 0  # samples of this epoch's shard already handed out

    def _recipe(self) -> dict:
        return {"kind": "synthetic_captions", "seed": self.seed, "num_samples": self.num_samples, "rank": self.rank,
                "world_size": self.world_size, "frames": [self.frames_lo, self.frames_hi], "size": self.size}

    def state_dict(self) -> dict:
        return {"recipe": self._recipe(), "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if state.get("recipe") != self._recipe():
            raise ValueError(f"data state is for {state.get('recipe')}, not {self._recipe()}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def _shard(self, epoch: int) -> list[int]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        return [int(i) for i in order[self.rank :: self.world_size]]

    def __iter__(self):
        while True:
            shard = self._shard(self.epoch)
            while self.position < len(shard):
                index = shard[self.position]
                self.position += 1
                yield self.sample(index)
            self.epoch, self.position = self.epoch + 1, 0

    def sample(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, 7, index])
        colour = list(COLOURS)[index % len(COLOURS)]
        motion = list(MOTIONS)[(index // len(COLOURS)) % len(MOTIONS)]
        duration = float(rng.uniform(*self.seconds))
        vlen = max(1, int(duration * self.fps))
        indices = frame_indices(vlen, self.fps, self.frames_lo, self.frames_hi)
        frames = torch.from_numpy(np.stack([self._frame(colour, motion, i / vlen) for i in indices]))
        caption = f"A {colour} square moves {motion}."
        return {
            "__key__": f"synthetic-{index:06d}",
            "frames": frames,
            "frame_indices": indices,
            "duration": vlen / self.fps,
            "conversations": [
                {"from": "human", "value": f"<image>\n{time_prompt(vlen / self.fps, len(indices))}\n{QUESTION}"},
                {"from": "gpt", "value": caption},
            ],
            "visual_tokens": len(indices) * 16,
            "source": "synthetic",
        }

    def _frame(self, colour: str, motion: str, progress: float) -> np.ndarray:
        size = self.size
        img = np.full((size, size, 3), 128, dtype=np.uint8)
        square = size // 3
        dx, dy = MOTIONS[motion]
        travel = (size - square) * progress
        x = int(travel if dx > 0 else (size - square - travel) if dx < 0 else (size - square) // 2)
        y = int(travel if dy > 0 else (size - square - travel) if dy < 0 else (size - square) // 2)
        img[y : y + square, x : x + square] = COLOURS[colour]
        return img


def synthetic_captions(stage, rank: int = 0, world_size: int = 1, seed: int = 0, **options) -> SyntheticCaptions:
    """Data factory for ``data.source``: the stage's frame bounds, the rank's shard."""
    return SyntheticCaptions(frames_lo=stage.frames_lo, frames_hi=stage.frames_hi, rank=rank,
                             world_size=world_size, seed=seed, **options)
