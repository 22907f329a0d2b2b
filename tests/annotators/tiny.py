"""Tiny random models shared by the captioner and annotate tests: built once per pytest session
(into the session's temp folder) and loaded through the same code path as a real checkpoint."""

from __future__ import annotations

from longvid.annotators.captioners import ModelConfig
from longvid.annotators.tiny_models import build_tiny_idefics3, build_tiny_qwen2


def tiny_models(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.getbasetemp() / "tiny-models"
    paths = {"vlm": base / "idefics3", "text": base / "qwen2"}
    if not (paths["vlm"] / "config.json").exists():
        build_tiny_idefics3(str(paths["vlm"]))
    if not (paths["text"] / "config.json").exists():
        build_tiny_qwen2(str(paths["text"]))
    return {k: str(v) for k, v in paths.items()}


def cpu_model(path: str, backend: str, in_process: bool = True) -> ModelConfig:
    """Settings for these machines: eager vLLM (no compilation), 1 GiB KV cache. ``in_process``
    (starts in seconds) only where the process is the engine's alone, such as a Ray actor: vLLM's
    CPU worker binds the process's OpenMP threads and disables ``torch.set_num_threads`` in it,
    which would slow every later torch test of a shared pytest process."""
    return ModelConfig(model=path, backend=backend, enforce_eager=True, engine_in_process=in_process, kv_cache_gib=1,
                       max_model_len=4096, batch_size=8)
