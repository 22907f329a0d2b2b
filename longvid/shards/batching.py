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

    def __init__(self, source, budget: int, buffer_size: int = 64, max_batch: int = 0, seed: int = 0,
                 batches_per_buffer: int = 0):
        """``batches_per_buffer`` > 0 cuts every buffer into exactly that many batches (fewer only when
        the buffer has fewer samples): with equal sample counts per rank (``epochs`` + ``even_ranks``)
        every rank then gets the same batch count. The budget is kept when it allows that many
        batches or fewer; otherwise the smallest padded size that gives that many is used."""
        if budget <= 0 or buffer_size <= 0 or batches_per_buffer < 0:
            raise ValueError("budget and buffer_size must be positive, batches_per_buffer >= 0")
        self.source, self.budget, self.buffer_size = source, budget, buffer_size
        self.max_batch, self.seed, self.batches_per_buffer = max_batch, seed, batches_per_buffer
        self.buffer_number, self.done = 0, 0
        self._buffer_state = source.state_dict()

    def _greedy(self, samples: list[dict], ranked: list[int], cap: int, max_batch: int) -> list[list[dict]]:
        batches: list[list[dict]] = []
        current: list[dict] = []
        for i in ranked:
            sample = samples[i]
            full = max_batch and len(current) >= max_batch
            if current and (full or sample["visual_tokens"] * (len(current) + 1) > cap):
                batches.append(current)
                current = []
            current.append(sample)
        if current:
            batches.append(current)
        return batches

    def cut(self, samples: list[dict]) -> list[list[dict]]:
        ranked = sorted(range(len(samples)), key=lambda i: (samples[i]["visual_tokens"], i))
        if not self.batches_per_buffer:
            return self._greedy(samples, ranked, self.budget, self.max_batch)
        wanted = min(self.batches_per_buffer, len(samples))
        max_batch = max(self.max_batch, -(-len(samples) // wanted)) if self.max_batch else 0
        batches = self._greedy(samples, ranked, self.budget, max_batch)
        if len(batches) > wanted:  # the budget needs more batches: the smallest cap that gives `wanted`
            low, high = self.budget, max(s["visual_tokens"] for s in samples) * len(samples)
            while low < high:
                middle = (low + high) // 2
                if len(self._greedy(samples, ranked, middle, max_batch)) <= wanted:
                    high = middle
                else:
                    low = middle + 1
            batches = self._greedy(samples, ranked, low, max_batch)
        while len(batches) < wanted:  # split the largest batch (still sorted by length) in two
            largest = max(range(len(batches)), key=lambda b: (len(batches[b]), -b))
            half = len(batches[largest]) // 2
            batches[largest:largest + 1] = [batches[largest][:half], batches[largest][half:]]
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
                "budget": self.budget, "buffer_size": self.buffer_size, "max_batch": self.max_batch, "seed": self.seed,
                "batches_per_buffer": self.batches_per_buffer}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.budget, self.buffer_size, self.max_batch, self.seed, self.batches_per_buffer)
        theirs = (state["budget"], state["buffer_size"], state["max_batch"], state["seed"],
                  state.get("batches_per_buffer", 0))
        if theirs != mine:
            raise ValueError("this batcher state was saved with a different budget, buffer size or seed")
        self.source.load_state_dict(state["source"])
        self._buffer_state = state["source"]
        self.buffer_number, self.done = int(state["buffer_number"]), int(state["done"])
