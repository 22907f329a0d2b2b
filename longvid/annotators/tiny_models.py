"""Tiny random models for tests, benchmarks and offline trials: an Idefics3 (SmolVLM) captioner,
a Qwen2 text model and a Whisper speech recogniser, each with a BPE tokenizer trained on the spot, saved with
``save_pretrained`` so they load through the same code path as a real checkpoint.

Their weights are random: they emit junk text. Never use them for real annotations.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

# Special tokens the Idefics3 processor looks up by name (image placeholders, tiling tags).
IDEFICS3_SPECIAL = (
    ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"]
    + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
)
QWEN2_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A SmolVLM-like chat template of our own: images and text in the user turn, "Assistant:" after.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ ' ' + part['text'] }}{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# ChatML, as Qwen2 uses it.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "a person walks into the kitchen and opens the fridge then cuts vegetables on a wooden board "
    "the camera pans across a street with cars and people crossing at the light a dog runs after "
    "a ball in the park while children play near the trees someone paints a wall in blue the video "
    "shows a man cooking pasta he adds salt and stirs the pot then pours sauce over the plate "
    "question answer summary event count order time when how many first after before seconds "
    "clip caption describe what happens in these frames of the video json list number start end"
)


@dataclass(frozen=True)
class TinySizes:
    """Small enough to start in seconds on 2 CPU cores; head size 32 because vLLM's CPU
    attention rejects 16."""

    vocab_size: int = 512  # BPE vocabulary trained on the spot (plus special tokens)
    hidden_size: int = 64  # text model width: 2 heads of 32
    num_layers: int = 2  # text decoder layers
    vision_hidden_size: int = 64  # vision encoder width: 2 heads of 32
    image_size: int = 64  # vision input side: 4x4 patches of 16 px
    patch_size: int = 16
    scale_factor: int = 2  # Idefics3 pixel shuffle: 16 patches -> 4 tokens per image
    max_position_embeddings: int = 4096
    text_heads: int = 0  # 0: hidden_size // 32
    text_kv_heads: int = 1
    text_intermediate: int = 0  # 0: 2 x hidden_size
    vision_layers: int = 2
    vision_heads: int = 0  # 0: vision_hidden_size // 32
    vision_intermediate: int = 0  # 0: 2 x vision_hidden_size
    model_vocab_size: int = 0  # embedding rows when more than the tokenizer has (a real model's vocabulary cost)


# SmolVLM2-2.2B-Instruct's shape, written out by hand from its published config.json (SigLIP-so400m
# vision tower at 384 px / patch 14, pixel shuffle 3 -> 81 tokens per image; SmolLM2-1.7B text model):
# random weights of a realistic size for GPU throughput figures, never for captions.
SMOLVLM2_2B = TinySizes(vocab_size=512, hidden_size=2048, num_layers=24, vision_hidden_size=1152, image_size=384,
                        patch_size=14, scale_factor=3, max_position_embeddings=16384, text_heads=32, text_kv_heads=32,
                        text_intermediate=8192, vision_layers=27, vision_heads=16, vision_intermediate=4304,
                        model_vocab_size=49280)
SHAPES = {"smolvlm2-2.2b": SMOLVLM2_2B}


def _train_tokenizer(special: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [_WORDS, _WORDS.upper(), "0 1 2 3 4 5 6 7 8 9 . , : ; [ ] { } \" ' - ? !\n"] * 4
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def _fast_tokenizer(special: list[str], vocab_size: int, chat_template: str, eos: str, bos: str | None = None):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(special, vocab_size),
        eos_token=eos,
        pad_token="<|endoftext|>",
        bos_token=bos,
        unk_token=None,
    )
    tok.chat_template = chat_template
    return tok


def build_tiny_qwen2(path: str, sizes: TinySizes = TinySizes(), seed: int = 0) -> str:
    """A random Qwen2 causal LM + tokenizer saved to ``path``; returns ``path``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _fast_tokenizer(QWEN2_SPECIAL, sizes.vocab_size, QWEN2_CHAT_TEMPLATE, eos="<|im_end|>")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.hidden_size * 2,
        num_hidden_layers=sizes.num_layers,
        num_attention_heads=sizes.hidden_size // 32,
        num_key_value_heads=1,
        max_position_embeddings=sizes.max_position_embeddings,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=False,  # tied random embeddings make greedy decoding echo the last prompt token
    )
    model = Qwen2ForCausalLM(config).eval()
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    _write_generation_config(path, tok.eos_token_id, tok.pad_token_id)
    return path


def build_tiny_idefics3(path: str, sizes: TinySizes = TinySizes(), seed: int = 0, dtype: str = "float32") -> str:
    """A random Idefics3 (SmolVLM architecture) model + processor saved to ``path`` (``dtype``:
    of the saved weights; bfloat16 halves a realistic shape's size on disk)."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tok = _fast_tokenizer(IDEFICS3_SPECIAL, sizes.vocab_size, IDEFICS3_CHAT_TEMPLATE,
                          eos="<end_of_utterance>", bos="<|im_start|>")
    image_processor = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": sizes.image_size},
        max_image_size={"longest_edge": sizes.image_size},
        do_image_splitting=False,  # one global tile per frame: the frame count sets the token count
    )
    tokens_per_image = (sizes.image_size // sizes.patch_size) ** 2 // sizes.scale_factor**2
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok,
                                  image_seq_len=tokens_per_image, chat_template=IDEFICS3_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    config = Idefics3Config(
        vision_config={
            "hidden_size": sizes.vision_hidden_size,
            "intermediate_size": sizes.vision_intermediate or sizes.vision_hidden_size * 2,
            "num_hidden_layers": sizes.vision_layers,
            "num_attention_heads": sizes.vision_heads or sizes.vision_hidden_size // 32,
            "image_size": sizes.image_size,
            "patch_size": sizes.patch_size,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": max(len(tok), sizes.model_vocab_size),
            "hidden_size": sizes.hidden_size,
            "intermediate_size": sizes.text_intermediate or sizes.hidden_size * 2,
            "num_hidden_layers": sizes.num_layers,
            "num_attention_heads": sizes.text_heads or sizes.hidden_size // 32,
            "num_key_value_heads": sizes.text_kv_heads,
            "max_position_embeddings": sizes.max_position_embeddings,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
            "bos_token_id": tok.bos_token_id,
            "tie_word_embeddings": False,
        },
        scale_factor=sizes.scale_factor,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = Idefics3ForConditionalGeneration(config).to(getattr(torch, dtype)).eval()
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    _write_generation_config(path, tok.eos_token_id, tok.pad_token_id)
    return path


WHISPER_SPECIAL = ["<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
                   "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def build_tiny_whisper(path: str, seed: int = 0) -> str:
    """A random Whisper (80 mel bins, 1 layer each side) + processor saved to ``path``. Timestamp
    tokens (``<|0.00|>`` .. ``<|30.00|>``) come last, after ``<|notimestamps|>``, as Whisper's
    timestamp logic requires."""
    import torch
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizerFast)

    end = "<|endoftext|>"
    tok = WhisperTokenizerFast(tokenizer_object=_train_tokenizer([end], 400), unk_token=end, bos_token=end,
                               eos_token=end, pad_token=end)
    tok.add_tokens(WHISPER_SPECIAL + [f"<|{i * 0.02:.2f}|>" for i in range(1501)], special_tokens=True)
    ids = {t: tok.convert_tokens_to_ids(t) for t in WHISPER_SPECIAL}
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok)
    config = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                           max_source_positions=1500, max_target_positions=448, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    g = model.generation_config
    g.decoder_start_token_id, g.no_timestamps_token_id = ids["<|startoftranscript|>"], ids["<|notimestamps|>"]
    g.lang_to_id = {"<|en|>": ids["<|en|>"]}
    g.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    g.is_multilingual, g.max_length, g.forced_decoder_ids = True, 448, None
    g.begin_suppress_tokens, g.suppress_tokens = [tok.eos_token_id], []
    g._from_model_config = False  # else loading rebuilds it from the model config and drops the timestamp ids
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _tiny_vision(image_size: int, hidden: int) -> dict:
    return {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": image_size, "patch_size": image_size // 4}


def build_tiny_clip(path: str, seed: int = 0, image_size: int = 32, hidden: int = 64, projection_dim: int = 32) -> str:
    """A random CLIP (tiny vision and text towers, ``projection_dim``-d image features) + its image
    processor saved to ``path``: loads with ``AutoModel`` / ``AutoImageProcessor`` like openai/clip-*."""
    import torch
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as CLIPImageProcessor

    torch.manual_seed(seed)
    text = {"vocab_size": 64, "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=_tiny_vision(image_size, hidden),
                                 projection_dim=projection_dim)).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_siglip(path: str, seed: int = 0, image_size: int = 32, hidden: int = 64) -> str:
    """A random SigLIP (tiny towers, ``hidden``-d image features) + its image processor saved to ``path``."""
    import torch
    from transformers import SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as SiglipImageProcessor

    torch.manual_seed(seed)
    text = {"vocab_size": 64, "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16}
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=_tiny_vision(image_size, hidden))).eval()
    processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _write_generation_config(path: str, eos: int, pad: int) -> None:
    # Explicit greedy defaults so neither engine picks up sampling settings from elsewhere.
    with open(os.path.join(path, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token_id": eos, "pad_token_id": pad, "do_sample": False}, f)


def main(argv: list[str] | None = None) -> int:
    """``python -m longvid.annotators.tiny_models OUT_DIR``: writes OUT_DIR/{idefics3,qwen2,whisper}."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    print(build_tiny_idefics3(os.path.join(args.out_dir, "idefics3")))
    print(build_tiny_qwen2(os.path.join(args.out_dir, "qwen2")))
    print(build_tiny_whisper(os.path.join(args.out_dir, "whisper")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
