"""The bundled video LLM (vision tower + HiCo + LLM) and its trainer. Knows nothing of Ray outside
``ray_train.py``. Exports (imported lazily so that ``longvid --help`` stays fast):

- ``VideoLLM`` (videollm): the model; ``ModelConfig``, ``TrainConfig``, ``StageConfig`` (config)
- ``train`` (trainer): the curriculum in one process; ``train_with_ray`` (ray_train): the same on Ray Train
- ``PivotKVConfig`` (pivotkv); ``tiny_model_config`` (tiny): tiny random models for tests and demos
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "VideoLLM": "videollm", "ModelConfig": "config", "TrainConfig": "config", "StageConfig": "config",
    "train": "trainer", "train_with_ray": "ray_train", "PivotKVConfig": "pivotkv", "tiny_model_config": "tiny",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
