"""What the trainer asks of its data, and token-budget micro-batching with an exact resume position.

A data source is any iterable of sample dicts (``__key__``, ``frames`` uint8 [T, H, W, 3],
``conversations``, ...) with ``state_dict()`` / ``load_state_dict()`` for its position. This
module never decodes video and never reorders samples.
"""

from __future__ import annotations

import importlib
from typing import Callable, Iterator, Protocol, runtime_checkable

from .videollm import PreparedSample, SampleError


@runtime_checkable
class DataSource(Protocol):
    def __iter__(self) -> Iterator[dict]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def load_factory(source: str) -> Callable[..., DataSource]:
    """``module:function`` inside the ``longvid`` package (config never names outside code)."""
    if not source:
        raise ValueError("data.source is not set: name the training data (longvid.shards.stream:training_source, "
                         "or toy for generated captions); there is no default data set")
    if source == "toy":  # config.TOY_SOURCE: the generated captioning set, only when named
        source = "longvid.model.toydata:synthetic_captions"
    module_name, _, attr = source.partition(":")
    if not module_name.startswith("longvid.") or not attr:
        raise ValueError(f"data.source must look like longvid.module:factory, got {source!r}")
    return getattr(importlib.import_module(module_name), attr)


class MicroBatches:
    """Groups samples into micro-batches whose padded size (samples x longest) stays within
    ``budget`` tokens. A sample that would overflow is held for the next batch; the state is then
    the source's state from before that sample, so a resume re-reads it and loses nothing."""

    def __init__(self, source: DataSource, prepare: Callable[[dict], PreparedSample], budget: int,
                 max_batch: int, max_length: int, max_frames: int):
        self.source = source
        self.prepare = prepare
        self.budget = budget
        self.max_batch = max_batch
        self.max_length = max_length
        self.max_frames = max_frames
        self.skipped: dict[str, int] = {}
        self._held: tuple[PreparedSample, dict] | None = None
        self._iterator: Iterator[dict] | None = None

    def state_dict(self) -> dict:
        return self._held[1] if self._held is not None else self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)
        self._held, self._iterator = None, None

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _pull(self) -> tuple[PreparedSample, dict] | None:
        if self._iterator is None:
            self._iterator = iter(self.source)
        while True:
            state = self.source.state_dict()
            try:
                raw = next(self._iterator)
            except StopIteration:
                return None
            try:
                sample = self.prepare(raw)
            except SampleError:
                self._skip("bad sample")
                continue
            if sample.frames.shape[0] > self.max_frames:
                self._skip("too many frames")
            elif sample.length > self.max_length:
                self._skip("too long")
            else:
                return sample, state

    def next_batch(self) -> list[PreparedSample]:
        """The next micro-batch; empty when the source is exhausted."""
        batch: list[PreparedSample] = []
        longest = 0
        while len(batch) < self.max_batch:
            if self._held is None:
                self._held = self._pull()
                if self._held is None:
                    break
            sample = self._held[0]
            grown = max(longest, sample.length)
            if batch and grown * (len(batch) + 1) > self.budget:
                break
            batch.append(sample)
            longest = grown
            self._held = None
        return batch
