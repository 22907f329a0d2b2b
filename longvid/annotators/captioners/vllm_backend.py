"""The vLLM backend: one offline ``vllm.LLM`` engine per worker (per GPU actor), fed whole
batches so vLLM's continuous batching keeps the GPU full.

Images go in as a list per prompt, a clip as one video for the families that take video; the
prompt text comes from the checkpoint's chat template. Never spawns an engine per request.
"""

from __future__ import annotations

import os

from .engine import Engine, Generation, GenerationRequest, ModelConfig, SamplingConfig, chat_templater, render_chat


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, config: ModelConfig, mm_limits: dict | None = None):
        super().__init__(config)
        self.mm_limits = dict(mm_limits or {})  # e.g. {"image": 8} or {"video": 1}
        self.llm = None
        self.templater = None

    def load(self) -> None:
        if self.llm is not None:
            return
        c = self.config
        if c.engine_in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # asked for explicitly in the config
        if c.kv_cache_gib > 0:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(c.kv_cache_gib) if c.kv_cache_gib >= 1 else c.kv_cache_gib)
        from vllm import LLM

        kwargs = dict(
            model=c.model,
            tensor_parallel_size=c.tensor_parallel_size,
            max_model_len=c.max_model_len or None,
            gpu_memory_utilization=c.gpu_memory_utilization,
            dtype=self._dtype(),
            seed=c.seed,
            enforce_eager=c.enforce_eager,
            trust_remote_code=c.trust_remote_code,
            # compact JSON under a schema: free whitespace lets a weak model pad forever instead of
            # answering (an engine-level switch; the per-request one is not honoured)
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
        )
        if self.mm_limits:
            kwargs["limit_mm_per_prompt"] = self.mm_limits
        if c.processor_kwargs:
            kwargs["mm_processor_kwargs"] = dict(c.processor_kwargs)
        kwargs.update(c.engine_kwargs)
        self.templater = chat_templater(c.model, c.trust_remote_code)
        self.llm = LLM(**kwargs)

    def _dtype(self) -> str:
        if self.config.dtype != "auto":
            return self.config.dtype
        import torch

        return "auto" if torch.cuda.is_available() else "float32"

    def info(self) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        dist = "unknown"
        for name in ("vllm", "vllm-cpu"):  # the CPU build is published as vllm-cpu; both report the engine as vllm
            try:
                dist = version(name)
                break
            except PackageNotFoundError:
                continue
        return {"name": "vllm", "version": dist, "dtype": self.config.dtype}

    def render(self, request: GenerationRequest) -> str:
        if self.templater is None:
            self.templater = chat_templater(self.config.model, self.config.trust_remote_code)
        return render_chat(self.templater, request.messages)

    def _params(self, request: GenerationRequest, s: SamplingConfig):
        from vllm import SamplingParams

        extra = {}
        if request.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams

            extra["structured_outputs"] = StructuredOutputsParams(json=request.json_schema)
        return SamplingParams(
            max_tokens=s.max_new_tokens,
            min_tokens=s.min_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p if s.temperature > 0 else 1.0,
            repetition_penalty=s.repetition_penalty,
            seed=self.config.seed,
            **extra,
        )

    def _prompt(self, request: GenerationRequest) -> dict:
        prompt: dict = {"prompt": self.render(request)}
        if request.video is not None:
            prompt["multi_modal_data"] = {"video": request.video}
        elif request.images:
            from PIL import Image

            prompt["multi_modal_data"] = {"image": [Image.fromarray(img) for img in request.images]}
        return prompt

    def generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[Generation]:
        self.load()
        if not requests:
            return []
        prompts, params = [], []
        for request in requests:
            prompts.append(self._prompt(request))
            params.append(self._params(request, sampling))
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception:  # noqa: BLE001 - one bad prompt fails the call; find it and keep the rest
            if len(requests) == 1:
                raise
            return [self._generate_one(p, sp) for p, sp in zip(prompts, params)]
        return [self._generation(o) for o in outputs]

    def _generate_one(self, prompt: dict, params) -> Generation:
        try:
            (output,) = self.llm.generate([prompt], [params], use_tqdm=False)
        except Exception as exc:  # noqa: BLE001 - the engine's reason is the item's reason
            return Generation(text="", num_tokens=0, finish_reason="error", error=f"{type(exc).__name__}: {exc}")
        return self._generation(output)

    @staticmethod
    def _generation(output) -> Generation:
        completion = output.outputs[0]
        reason = "length" if completion.finish_reason == "length" else "stop"
        return Generation(text=completion.text, num_tokens=len(completion.token_ids), finish_reason=reason)

    def close(self) -> None:
        if self.llm is None:
            return
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        self.llm = None
