"""Length-grouped batches under a visual-token budget, with a resumable state, for training loops
that do their own batching over a ShardStream (the bundled trainer uses ``MicroBatches``).

Holds one buffer of samples at a time; never reorders across buffers.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


class TokenBudgetBatcher:
    """Length-grouped batches under a visual-token budget: take ``buffer_size`` samples, sort them
    by visual tokens, cut batches whose padded size (samples x longest) fits ``budget``, and hand
    the batches out in a seeded order so long and short ones interleave.

    The state is the source's state at the start of the current buffer plus the batches of that
    buffer already handed out: a resume re-reads the buffer and skips those batches.
    """

    def __init__(self, source, budget: int, buffer_size: int = 64, max_batch: int = 0, seed: int = 0):
        if budget <= 0 or buffer_size <= 0:
            raise ValueError("budget and buffer_size must be positive")
        self.source, self.budget, self.buffer_size = source, budget, buffer_size
        self.max_batch, self.seed = max_batch, seed
        self.buffer_number, self.done = 0, 0
        self._buffer_state = source.state_dict()

    def cut(self, samples: list[dict]) -> list[list[dict]]:
        ranked = sorted(range(len(samples)), key=lambda i: (samples[i]["visual_tokens"], i))
        batches: list[list[dict]] = []
        current: list[dict] = []
        for i in ranked:
            sample = samples[i]
            full = self.max_batch and len(current) >= self.max_batch
            if current and (full or sample["visual_tokens"] * (len(current) + 1) > self.budget):
                batches.append(current)
                current = []
            current.append(sample)
        if current:
            batches.append(current)
        return batches

    def __iter__(self) -> Iterator[list[dict]]:
        samples = iter(self.source)
        while True:
            self._buffer_state = self.source.state_dict()
            buffer = [s for _, s in zip(range(self.buffer_size), samples)]
            if not buffer:
                return
            batches = self.cut(buffer)
            order = np.random.default_rng([self.seed, self.buffer_number]).permutation(len(batches))
            while self.done < len(batches):
                self.done += 1
                yield batches[order[self.done - 1]]
            self.buffer_number, self.done = self.buffer_number + 1, 0

    def state_dict(self) -> dict:
        return {"source": self._buffer_state, "buffer_number": self.buffer_number, "done": self.done,
                "budget": self.budget, "buffer_size": self.buffer_size, "max_batch": self.max_batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.budget, self.buffer_size, self.max_batch, self.seed)
        if (state["budget"], state["buffer_size"], state["max_batch"], state["seed"]) != mine:
            raise ValueError("this batcher state was saved with a different budget, buffer size or seed")
        self.source.load_state_dict(state["source"])
        self._buffer_state = state["source"]
        self.buffer_number, self.done = int(state["buffer_number"]), int(state["done"])
