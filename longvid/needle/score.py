"""Scoring: the option a model's reply chose (A-D), an item's score (single hop: right or wrong; multi
hop: the mean of its chain and final questions), and the tables of ``results.json``. Pure.
"""

from __future__ import annotations

import re

from .items import LETTERS

# a letter leading the reply: "B", "(C) cat", "D.", "Option A:"; not the article in "A square moves"
_LEAD = re.compile(r"^\W*(?:(?i:option)\s+|(?i:answer)\s*[:\-]?\s*)?(?:\(([A-D])\)|\[([A-D])\]|([A-D])(?=[.):,*]|$))")
_SAID = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is|:|-)?\s*\(?([A-D])\b")
_BARE = re.compile(r"\(([A-D])\)|(?:^|\s)([A-D])(?=[.):,]|$)")


def parse_choice(reply: str, options: list[str]) -> str | None:
    """The letter a reply chose, or None. In order: a letter leading the reply ("B", "(C) cat", "D."),
    "the answer is C" / "option B", "(B)" or a capital A-D ending a sentence anywhere, then the text of exactly one option."""
    text = (reply or "").strip()
    if not text:
        return None
    for pattern in (_LEAD, _SAID, _BARE):
        match = pattern.search(text)
        if match:
            return next(g for g in match.groups() if g)
    lowered = text.lower()
    hits = [i for i, option in enumerate(options) if option and re.search(rf"\b{re.escape(option.lower())}\b", lowered)]
    return LETTERS[hits[0]] if len(hits) == 1 else None


def item_score(correct: list[bool]) -> float:
    """Single hop: 1 or 0. Multi hop: the mean of the chain question and the final-needle question."""
    return sum(correct) / len(correct) if correct else 0.0


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def summarise(records: dict[str, dict], scored: list[dict]) -> dict:
    """Accuracy per haystack length x depth (single hop), multi-hop scores per length, overall figures."""
    single: dict[str, dict[str, list[float]]] = {}
    multi: dict[str, list[float]] = {}
    chain, final, unparsed, frames, seconds, peaks = [], [], 0, 0, 0.0, []
    for row in scored:
        item = records.get(row["id"])
        if item is None:
            continue
        length = str(item["haystack_frames"])
        if item["kind"] == "single":
            single.setdefault(length, {}).setdefault(f"{item['depth']:g}", []).append(row["score"])
        else:
            multi.setdefault(length, []).append(row["score"])
            chain.append(float(row["correct"][0]))
            final.append(float(row["correct"][1]))
        unparsed += sum(choice is None for choice in row["choices"])
        frames += row.get("frames_asked", row["frames"])  # a multi-hop item's frames go in once per question
        seconds += row["model_s"]
        peaks.append(row.get("peak_mb", 0.0))
    single_table = {length: {depth: _mean(v) for depth, v in cells.items()} for length, cells in single.items()}
    all_single = [s for cells in single.values() for v in cells.values() for s in v]
    return {
        "items_scored": len(scored), "unparsed_answers": unparsed,
        "single_hop": {"accuracy": _mean(all_single), "by_length_depth": single_table,
                       "by_length": {length: _mean([s for v in cells.values() for s in v]) for length, cells in single.items()}},
        "multi_hop": {"score": _mean([s for v in multi.values() for s in v]), "by_length": {k: _mean(v) for k, v in multi.items()},
                      "chain_accuracy": _mean(chain), "final_accuracy": _mean(final)},
        "frames_asked": frames, "model_seconds": round(seconds, 3),
        "frames_per_s": round(frames / seconds, 3) if seconds else None,
        "peak_memory_mb": round(max(peaks), 1) if peaks else None,
    }
