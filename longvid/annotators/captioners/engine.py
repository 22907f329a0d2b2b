"""Model engines behind the captioners and writers: one request/answer shape, two backends
(vLLM's offline ``LLM`` and transformers' ``generate``), chosen by name in the config.

An engine is loaded once per worker (``load``) and then fed batches of chat requests. It never
decodes video and never knows about Ray; per-request failures come back as data, not exceptions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

# Model families whose processors take a clip as one video input rather than a list of images.
VIDEO_INPUT_FAMILIES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "llava_onevision",
                                  "llava_next_video"})
BACKENDS = ("auto", "vllm", "transformers")


@dataclass
class ModelConfig:
    model: str = ""  # hub id or local path of the checkpoint (required)
    backend: str = "auto"  # auto: vllm where it imports, else transformers | vllm (GPU throughput) | transformers (any torch device)
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU (CPU kernels are fastest in fp32)
    max_model_len: int = 0  # vLLM context in tokens; 0: the checkpoint's own (smaller saves KV-cache memory)
    tensor_parallel_size: int = 1  # vLLM: GPUs per engine; give the actor as many GPUs (pipeline.num_gpus)
    gpu_memory_utilization: float = 0.85  # vLLM: share of GPU memory for weights + KV cache; leaves room for the encoder
    enforce_eager: bool = False  # vLLM: skip torch.compile/CUDA graphs; starts in seconds (tests, CPU), slower steady state
    engine_in_process: bool = False  # vLLM: engine core in this process, starts in seconds; it binds the process's threads, so only in a process of its own (an actor)
    kv_cache_gib: float = 0.0  # vLLM CPU build only: KV cache size in GiB (0 = leave VLLM_CPU_KVCACHE_SPACE as it is)
    trust_remote_code: bool = False  # never run a checkpoint's own Python unless asked for explicitly
    device: str = "auto"  # transformers: auto (cuda if present, else cpu) | cpu | cuda | cuda:N
    batch_size: int = 8  # transformers: prompts per generate call (padding grows with it); vLLM batches itself
    seed: int = 0  # sampling seed, so a re-run with temperature > 0 is repeatable
    engine_kwargs: dict = field(default_factory=dict)  # passed as is to vllm.LLM (e.g. distributed_executor_backend)
    processor_kwargs: dict = field(default_factory=dict)  # to the checkpoint's processor (vLLM: mm_processor_kwargs)


@dataclass
class SamplingConfig:
    max_new_tokens: int = 256  # a caption of a few sentences is < 150 tokens; the cap catches run-away output
    min_new_tokens: int = 0  # forbid stopping before this many tokens (tests use it to force over-long output)
    temperature: float = 0.0  # greedy: captions are data, a re-run should give the same text
    top_p: float = 1.0  # only used when temperature > 0
    repetition_penalty: float = 1.0  # >1 discourages the loops small captioners fall into


@dataclass
class GenerationRequest:
    """One chat prompt. ``messages`` use content parts {"type": "text"|"image"|"video"};
    ``images``/``video`` hold the pixels (HxWx3 / TxHxWx3 uint8) in the placeholders' order."""

    messages: list[dict]
    images: list[np.ndarray] = field(default_factory=list)
    video: np.ndarray | None = None
    json_schema: dict | None = None  # constrain the output to this schema where the engine can


@dataclass
class Generation:
    text: str
    num_tokens: int  # generated tokens (the stop token included)
    finish_reason: str  # "stop" | "length" | "error"
    error: str | None = None


def chat_templater(model: str, trust_remote_code: bool):
    """The object whose ``apply_chat_template`` knows the model's image/video placeholders."""
    from transformers import AutoProcessor, AutoTokenizer

    try:
        return AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError):  # text-only checkpoints may have no processor
        return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)


def render_chat(templater, messages: list[dict]) -> str:
    return templater.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def model_family(model: str, trust_remote_code: bool = False) -> str:
    """The checkpoint's ``model_type`` (``idefics3``, ``qwen2_5_vl``...), from its config."""
    path = os.path.join(os.path.expanduser(model), "config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("model_type", "")
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code).model_type


def check_model_config(config: ModelConfig) -> None:
    if not config.model:
        raise ValueError("no model given: set the model's hub id or local path (--captioner / --writer)")
    if config.backend not in BACKENDS:
        raise ValueError(f"unknown backend {config.backend!r}; choose one of {BACKENDS}")
    if config.tensor_parallel_size < 1 or config.batch_size < 1:
        raise ValueError("tensor_parallel_size and batch_size must be >= 1")
    for name in ("engine_kwargs", "processor_kwargs"):
        if not isinstance(getattr(config, name), dict):
            raise ValueError(f"{name} must be a mapping: set it in the YAML config file, not as a flag")


class Engine:
    """Base of the backends: a loaded model. ``load`` once per worker; ``generate`` many times,
    each call with its own sampling settings (so captioners differing only in prompt, policy or
    sampling can share one engine)."""

    name = "engine"

    def __init__(self, config: ModelConfig):
        check_model_config(config)
        self.config = config

    def load(self) -> None:
        raise NotImplementedError

    def generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[Generation]:
        raise NotImplementedError

    def info(self) -> dict:
        """Engine name and version: part of every producer record."""
        raise NotImplementedError

    def render(self, request: GenerationRequest) -> str:
        """The prompt text from the checkpoint's own chat template (the same for both backends)."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the model (tests and benchmarks load several in one process)."""

    # -- token accounting (the writer sizes its requests with the model's own tokenizer) ---------
    templater = None  # set by the backends: the processor or tokenizer that renders chat prompts

    def _tokenizer(self):
        if self.templater is None:
            self.templater = chat_templater(self.config.model, self.config.trust_remote_code)
        return getattr(self.templater, "tokenizer", self.templater)

    def count_tokens(self, text):
        """Tokens of ``text`` (or of each of a list of texts, in one tokenizer call) under the
        checkpoint's tokenizer, no special tokens added."""
        if isinstance(text, str):
            return len(self._tokenizer()(text, add_special_tokens=False)["input_ids"])
        if not text:
            return []
        return [len(ids) for ids in self._tokenizer()(list(text), add_special_tokens=False)["input_ids"]]

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens of the request's rendered chat prompt (text requests: what the engine will see)."""
        self._tokenizer()
        return self.count_tokens(self.render(request))

    def context_length(self) -> int:
        """Prompt + output tokens one request may use: ``max_model_len`` when set, else the
        checkpoint's own ``max_position_embeddings``."""
        if self.config.max_model_len:
            return self.config.max_model_len
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(self.config.model, trust_remote_code=self.config.trust_remote_code)
        text = getattr(cfg, "text_config", None) or cfg
        return int(getattr(text, "max_position_embeddings", 0) or getattr(cfg, "max_position_embeddings", 0) or 4096)


def vllm_importable() -> bool:
    """True where a ``vllm`` package is installed and findable (its import may still fail on a
    broken install; that then is the engine's load error)."""
    import importlib.util

    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def resolve_backend(config: ModelConfig, note=None) -> ModelConfig:
    """``auto`` made concrete: vllm where it imports, else transformers (``note`` gets one line)."""
    from dataclasses import replace

    if config.backend != "auto":
        return config
    if vllm_importable():
        return replace(config, backend="vllm")
    if note is not None:
        note("vllm is not installed here: using the transformers backend (set --backend vllm|transformers to choose)")
    return replace(config, backend="transformers")


def make_engine(config: ModelConfig, mm_limits: dict | None = None) -> Engine:
    """The configured backend (not loaded yet); ``mm_limits`` is the most images/videos one
    prompt carries."""
    check_model_config(config)
    config = resolve_backend(config)
    if config.backend == "vllm":
        from .vllm_backend import VllmEngine

        return VllmEngine(config, mm_limits)
    from .transformers_backend import TransformersEngine

    return TransformersEngine(config)
