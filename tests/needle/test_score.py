"""Reading the chosen option out of a model's reply, and item scores."""

from __future__ import annotations

import pytest

from longvid.needle.score import item_score, parse_choice

OPTIONS = ["circle", "square", "red", "blue"]


@pytest.mark.parametrize("reply, choice", [
    ("B", "B"), ("(C) red", "C"), ("D.", "D"), ("Option A: circle", "A"), ("B) square", "B"), ("**C**", "C"),
    ("The answer is C", "C"), ("answer: D", "D"), ("I think it is (B).", "B"),
    ("A square moves left", "B"),  # the article is no choice; the one option named is
    ("it is blue", "D"), ("circle or square", None), ("the answer is a triangle", None), ("", None),
    ("junk ĠĠ tokens", None),
])
def test_parse_choice(reply, choice):
    assert parse_choice(reply, OPTIONS) == choice


def test_item_score_is_the_mean_of_its_questions():
    assert item_score([True]) == 1.0 and item_score([False]) == 0.0
    assert item_score([True, False]) == 0.5 and item_score([]) == 0.0
