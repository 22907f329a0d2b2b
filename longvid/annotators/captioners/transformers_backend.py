"""The transformers backend: ``generate`` on padded batches, on CPU or one GPU.

The reference engine (and the one for machines without vLLM): same prompts, same chat
templates, same request/answer shape as the vLLM backend. It has no constrained decoding, so a
request's ``json_schema`` is ignored here and the caller's parser must cope.
"""

from __future__ import annotations

from .engine import Engine, Generation, GenerationRequest, ModelConfig, SamplingConfig, chat_templater, render_chat


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.model = None
        self.templater = None
        self.tokenizer = None
        self.is_multimodal = False
        self.eos_ids: set[int] = set()

    def _device(self) -> str:
        import torch

        if self.config.device != "auto":
            return self.config.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def _torch_dtype(self):
        import torch

        if self.config.dtype == "auto":
            return torch.bfloat16 if self._device().startswith("cuda") else torch.float32
        return getattr(torch, self.config.dtype)

    def load(self) -> None:
        if self.model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        c = self.config
        self.templater = chat_templater(c.model, c.trust_remote_code)
        self.tokenizer = getattr(self.templater, "tokenizer", self.templater)
        self.tokenizer.padding_side = "left"  # generation appends on the right
        self.is_multimodal = hasattr(self.templater, "image_processor") or hasattr(self.templater, "video_processor")
        model_cls = AutoModelForImageTextToText if self.is_multimodal else AutoModelForCausalLM
        model = model_cls.from_pretrained(c.model, dtype=self._torch_dtype(), trust_remote_code=c.trust_remote_code)
        self.model = model.to(self._device()).eval()
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(e) for e in eos if e is not None} | {int(self.tokenizer.eos_token_id)}

    def info(self) -> dict:
        import torch
        import transformers

        return {"name": "transformers", "version": transformers.__version__, "torch": torch.__version__,
                "dtype": self.config.dtype}

    def render(self, request: GenerationRequest) -> str:
        if self.templater is None:
            self.templater = chat_templater(self.config.model, self.config.trust_remote_code)
        return render_chat(self.templater, request.messages)

    def generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[Generation]:
        self.load()
        out: list[Generation] = []
        size = self.config.batch_size
        for i in range(0, len(requests), size):
            chunk = requests[i : i + size]
            try:
                out.extend(self._generate_chunk(chunk, sampling))
            except Exception:  # noqa: BLE001 - isolate the request that broke the batch
                out.extend(self._generate_each(chunk, sampling))
        return out

    def _generate_each(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[Generation]:
        out = []
        for request in requests:
            try:
                out.extend(self._generate_chunk([request], sampling))
            except Exception as exc:  # noqa: BLE001 - the engine's reason is the item's reason
                out.append(Generation("", 0, "error", f"{type(exc).__name__}: {exc}"))
        return out

    def _inputs(self, requests: list[GenerationRequest]):
        texts = [self.render(r) for r in requests]
        if not self.is_multimodal:
            return self.tokenizer(texts, padding=True, return_tensors="pt")
        kwargs = {}
        if any(r.video is not None for r in requests):
            kwargs["videos"] = [r.video for r in requests]
        if any(r.images for r in requests):
            kwargs["images"] = [list(r.images) for r in requests]
        return self.templater(text=texts, padding=True, return_tensors="pt", **kwargs, **self.config.processor_kwargs)

    def _generate_chunk(self, requests: list[GenerationRequest], s: SamplingConfig) -> list[Generation]:
        import torch

        inputs = self._inputs(requests).to(self.model.device)
        if "pixel_values" in inputs and inputs["pixel_values"].dtype.is_floating_point:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        sample = s.temperature > 0
        if sample:
            torch.manual_seed(self.config.seed)
        with torch.inference_mode():
            generated = self.model.generate(
                **inputs,
                max_new_tokens=s.max_new_tokens,
                min_new_tokens=s.min_new_tokens or None,
                do_sample=sample,
                temperature=s.temperature if sample else None,
                top_p=s.top_p if sample else None,
                top_k=None,
                repetition_penalty=s.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = generated[:, inputs["input_ids"].shape[1]:].tolist()
        return [self._generation(row) for row in new_tokens]

    def _generation(self, tokens: list[int]) -> Generation:
        stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        if stop is None:
            return Generation(text=text, num_tokens=len(tokens), finish_reason="length")
        return Generation(text=text, num_tokens=stop + 1, finish_reason="stop")

    def close(self) -> None:
        self.model = None
