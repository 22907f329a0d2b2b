"""Benchmark items: where needles go (depths, multi-hop parts), what they show, and their questions
with four options and a known answer (SEEDS.md §5). Pure and seeded: no files, no model.

Single hop: one needle at depth d, entered before haystack frame ``4 * round(d * L / 4)`` so that it
fills one whole 4-frame clip of the model's input. Multi hop with N needles: the haystack is cut into
N - 1 equal parts; needle 0 goes before part 1 (the start), needle i after part i (the last needle
closes the haystack). Needle i names needle i + 1; the questions name the start.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from . import render

LETTERS = "ABCD"
CLIP = 4  # frames a needle fills: one clip of the model's vision path (HiCo's clip length)
WORDS = ("APPLE", "RIVER", "TIGER", "PIANO", "CLOUD", "HONEY", "MANGO", "ROBOT", "CANDLE", "PLANET",
         "GARDEN", "ZEBRA", "ANCHOR", "BRIDGE", "COFFEE", "DRAGON", "FOREST", "GUITAR", "LEMON", "WINTER")
LABELS = ("FIG", "KIWI", "PLUM", "PEAR", "LIME", "DATE", "YAM", "BEAN", "CORN", "RICE", "OAT", "NUT",
          "MINT", "SAGE", "LEEK", "KALE")
FAMILIES = ("shape", "colour", "number", "word")
MCQ_SUFFIX = "Answer with the option's letter from the given choices directly."


@dataclass
class Needle:
    """One needle: its picture (RGB uint8) and what the picture shows."""

    name: str  # file stem under BENCH/needles/
    image: np.ndarray | None  # None: an existing file (a manifest needle already written)
    facts: dict = field(default_factory=dict)  # what it shows: shape, colour, number, word, label, next


def item_rng(seed: int, item_id: str) -> np.random.Generator:
    """One generator per item from the seed and the item's id: adding lengths leaves other items alone."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


class AnswerSlots:
    """Where each question's right answer goes: A-D in seeded blocks of four, so every letter is the
    answer of a quarter of the questions and a model that always says one letter scores at chance."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng([seed, 0x616E73])
        self.pending: list[int] = []

    def next(self) -> int:
        if not self.pending:
            self.pending = [int(i) for i in self.rng.permutation(4)]
        return self.pending.pop(0)


def make_options(correct: str, distractors: list[str], slot: int, rng: np.random.Generator) -> tuple[list[str], str]:
    """Four distinct options: ``correct`` at ``slot``, three of ``distractors`` (seeded) around it."""
    pool = [d for d in dict.fromkeys(distractors) if d != correct]
    if len(pool) < 3:
        raise ValueError(f"need 3 distractors besides {correct!r}, got {pool}")
    chosen = [pool[int(i)] for i in rng.permutation(len(pool))[:3]]
    options = chosen[:slot] + [correct] + chosen[slot:]
    return options, LETTERS[slot]


def question(text: str, options: list[str], answer: str, about: str) -> dict:
    return {"question": text, "options": options, "answer": answer, "about": about}


def single_needle(name: str, rng: np.random.Generator, slot: int, size: int) -> tuple[Needle, dict]:
    """A generated needle of a seeded family (shape, colour, number or word) and its question."""
    family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    shape = render.SHAPES[int(rng.integers(len(render.SHAPES)))]
    colour = list(render.COLOURS)[int(rng.integers(len(render.COLOURS)))]
    if family in ("shape", "colour"):
        image, facts = render.shape_card(shape, colour, size), {"shape": shape, "colour": colour}
        lead = "A card with a coloured shape appears for a moment in the video."
        if family == "shape":
            options, answer = make_options(shape, list(render.SHAPES), slot, rng)
            text = f"{lead} What shape is on the card?"
        else:
            options, answer = make_options(colour, list(render.COLOURS), slot, rng)
            text = f"{lead} What colour is the shape on the card?"
    elif family == "number":
        number = int(rng.integers(10, 100))
        image, facts = render.text_card([str(number)], size), {"number": number}
        others = [str(n) for n in rng.permutation(np.arange(10, 100))[:12] if n != number]
        options, answer = make_options(str(number), others, slot, rng)
        text = "A card with a number appears for a moment in the video. Which number is on the card?"
    else:
        word = WORDS[int(rng.integers(len(WORDS)))]
        image, facts = render.text_card([word], size), {"word": word}
        options, answer = make_options(word.lower(), [w.lower() for w in WORDS], slot, rng)
        text = "A card with a word appears for a moment in the video. Which word is on the card?"
    return Needle(name, image, dict(facts, family=family)), question(text, options, answer, family)


def chain_needles(name: str, hops: int, rng: np.random.Generator, slots: AnswerSlots,
                  size: int) -> tuple[list[Needle], list[dict]]:
    """``hops`` chain cards (each names the next) and the two questions: the final card's shape reached
    from the start, and the colour of the final card's shape."""
    labels = [LABELS[int(i)] for i in rng.permutation(len(LABELS))[:hops]]
    shapes = [render.SHAPES[int(i)] for i in rng.integers(len(render.SHAPES), size=hops)]
    colours = [list(render.COLOURS)[int(i)] for i in rng.integers(len(render.COLOURS), size=hops)]
    needles = []
    for i in range(hops):
        following = labels[i + 1] if i + 1 < hops else ""
        needles.append(Needle(f"{name}-{i}", render.chain_card(labels[i], following, shapes[i], colours[i], size),
                              {"label": labels[i], "next": following, "shape": shapes[i], "colour": colours[i],
                               "hop": i}))
    final = needles[-1].facts
    # distractors from the chain first: a model that stops early picks a shape it has seen
    shape_pool = [s for s in shapes[:-1] if s != final["shape"]] + list(render.SHAPES)
    options, answer = make_options(final["shape"], shape_pool, slots.next(), rng)
    chain = question(f"Cards with a name, a shape and a NEXT sign appear in the video; each NEXT sign names "
                     f"another card. Start at the card named {labels[0]} and follow the NEXT signs to the last "
                     f"card of the chain. What shape is on that last card?", options, answer, "chain")
    colour_pool = [c for c in colours[:-1] if c != final["colour"]] + list(render.COLOURS)
    options, answer = make_options(final["colour"], colour_pool, slots.next(), rng)
    last = question(f"What colour is the shape on the card named {labels[-1]}?", options, answer, "final")
    return needles, [chain, last]


def single_offset(depth: int | float, length: int) -> int:
    """Haystack offset of a single needle at ``depth`` (0..1), on the 4-frame clip grid."""
    return CLIP * int(round(depth * length / CLIP))


def multi_offsets(hops: int, length: int) -> list[int]:
    """Haystack offsets of a chain of ``hops`` needles: 0, then after each of hops - 1 equal parts."""
    return [CLIP * int(round(i * length / (hops - 1) / CLIP)) for i in range(hops)]


def final_positions(insert_at: list[int]) -> list[list[int]]:
    """Frame positions of each needle's clip in the final sequence (earlier needles shift later ones)."""
    return [[at + CLIP * i + k for k in range(CLIP)] for i, at in enumerate(insert_at)]


def item_record(item_id: str, kind: str, depth, length: int, insert_at: list[int], needles: list[dict],
                questions: list[dict], haystack: dict, seed: int) -> dict:
    main = questions[0]
    return {
        "id": item_id, "kind": kind, "hops": len(insert_at), "depth": depth, "haystack_frames": length,
        "total_frames": length + CLIP * len(insert_at), "needle_frames": CLIP, "insert_at": insert_at,
        "needle_positions": final_positions(insert_at), "needles": needles, "questions": questions,
        "question": main["question"], "options": main["options"], "answer": main["answer"],
        "haystack": haystack, "seed": seed,
    }


def mcq_prompt(q: dict) -> str:
    """The question as the model sees it: the options lettered, then the instruction to answer a letter."""
    lines = [q["question"]] + [f"({LETTERS[i]}) {option}" for i, option in enumerate(q["options"])]
    return "\n".join(lines + [MCQ_SUFFIX])
