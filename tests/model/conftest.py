"""Tiny random models built once per session (no hub), and one torch thread per model test:
on the shared 2-core machines, tiny matmuls on 2 threads run ~10x slower than on one."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """ModelConfig of a tiny CLIP tower (48 px, 8 px patches: 36 tokens per frame) and a 4-layer
    Qwen2 with dropout before layers 1 (uniform, 75%) and 3 (attention, 25%)."""
    from longvid.model.tiny import tiny_model_config

    return tiny_model_config(str(tmp_path_factory.mktemp("tiny")), vision="clip")


@pytest.fixture
def tiny_model(tiny_config):
    import copy

    from longvid.model.videollm import VideoLLM

    return VideoLLM.from_config(copy.deepcopy(tiny_config), seed=0)


@pytest.fixture(scope="module")
def ray_local():
    """A Ray of our own: ``address="local"`` so a cluster another process started on this machine
    is never joined (it would refuse ``num_cpus``). Reuses one this session already started."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(address="local", num_cpus=4, object_store_memory=300 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)
    yield ray
    ray.shutdown()
