"""Tiny random models built from configs, for tests, demos and CPU benchmarks (no hub needed): a
vision tower (CLIP, SigLIP, ViT or VideoMAE), a Qwen2 causal LM and a byte-level BPE tokenizer
trained on the spot with ChatML special tokens. Saved with ``save_pretrained`` so they load through
the same code path as real checkpoints. Random weights: never assert on generated words.
"""

from __future__ import annotations

import os

from .config import HiCoConfig, LLMConfig, ModelConfig, VisionConfig
from .toydata import COLOURS, MOTIONS, QUESTION

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    from ..shards.sampling import time_prompt

    lines = [f"A {c} square moves {m}." for c in COLOURS for m in MOTIONS]
    lines += [time_prompt(d, n) for d, n in ((12.5, 8), (30.0, 64), (3600.0, 512))]
    lines += [QUESTION, "You are a helpful assistant.", "system user assistant", "What happens in the video?",
              "0123456789 . , ? ! the a an of in on and to is are frames seconds video lasts sampled uniformly"]
    return lines * 4


def train_tokenizer(path: str, vocab_size: int = 320):
    """A byte-level BPE tokenizer with ChatML specials, saved to ``path``; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(path)
    return fast


def tiny_llm(path: str, layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2, seed: int = 0):
    """A random Qwen2 causal LM (and its tokenizer) saved to ``path``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer(path)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=32768, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def tiny_vision(path: str, kind: str = "clip", image_size: int = 48, patch_size: int = 8, hidden: int = 32,
                layers: int = 3, seed: int = 0) -> str:
    """A random vision tower saved to ``path``: clip, siglip, vit, or videomae (a clip-level tower)."""
    import torch
    import transformers

    common = dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                  num_attention_heads=4, image_size=image_size, patch_size=patch_size)
    builders = {
        "clip": ("CLIPVisionConfig", "CLIPVisionModel", {}),
        "siglip": ("SiglipVisionConfig", "SiglipVisionModel", {}),
        "vit": ("ViTConfig", "ViTModel", {}),
        "videomae": ("VideoMAEConfig", "VideoMAEModel", {"num_frames": 4, "tubelet_size": 1}),
    }
    if kind not in builders:
        raise ValueError(f"unknown tiny vision kind {kind!r}; one of {sorted(builders)}")
    config_name, model_name, extra = builders[kind]
    config = getattr(transformers, config_name)(**common, **extra)
    torch.manual_seed(seed)
    getattr(transformers, model_name)(config).save_pretrained(path)
    return path


def tiny_model_config(root: str, vision: str = "clip", llm_layers: int = 4, dropout_layers=(1, 3),
                      image_size: int = 48, llm_hidden: int = 64, vision_hidden: int = 32) -> ModelConfig:
    """Build and save a tiny tower and LLM under ``root``; a ModelConfig that names them."""
    vision_path = tiny_vision(os.path.join(root, f"vision-{vision}"), vision, image_size=image_size, hidden=vision_hidden)
    llm_path = tiny_llm(os.path.join(root, "llm"), layers=llm_layers, hidden=llm_hidden)
    return ModelConfig(
        vision=VisionConfig(name_or_path=vision_path, kind="video" if vision == "videomae" else "image"),
        hico=HiCoConfig(dropout_layers=list(dropout_layers)),
        llm=LLMConfig(name_or_path=llm_path),
    )
