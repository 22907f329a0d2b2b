"""Read-time filters: SQL-ish text → Arrow expression, exactly the rows the predicate names, and
clear refusals (never evaluation) for anything outside the allow-list."""

from __future__ import annotations

import pyarrow as pa
import pytest

from longvid.shards.where import WhereError, apply_where, compile_where, parse_where

TABLE = pa.table({
    "n": [1, 2, 3, 4, 5],
    "motion_score": [0.01, 0.5, None, 0.3, 0.03],
    "near_duplicate_of": [None, None, None, "k1", None],
    "bucket": ["0-30s", "30-60s", "0-30s", "3-10min", "0-30s"],
    "ok": [True, False, True, True, False],
})


def kept(text: str) -> list[int]:
    return apply_where(TABLE, compile_where(text)).column("n").to_pylist()


@pytest.mark.parametrize("text, expected", [
    ("motion_score > 0.02 and near_duplicate_of is null", [2, 5]),
    ("motion_score > 0.02 AND near_duplicate_of IS NULL", [2, 5]),
    ("near_duplicate_of is not null", [4]),
    ("near_duplicate_of IS NOT None", [4]),
    ("bucket in ('0-30s', '3-10min')", [1, 3, 4, 5]),
    ("bucket NOT IN ('0-30s')", [2, 4]),
    ("not (n = 2) and n <> 3", [1, 4, 5]),
    ("1 < n <= 3", [2, 3]),
    ("n >= -1 and n != 5", [1, 2, 3, 4]),
    ("ok", [1, 3, 4]),
    ("ok = false or n > 4", [2, 5]),
    ("motion_score < 0.1 or motion_score is null", [1, 3, 5]),
])
def test_the_filter_keeps_exactly_the_rows_the_predicate_names(text, expected):
    assert kept(text) == expected


def test_a_null_comparison_drops_the_row_as_in_sql():
    assert 3 not in kept("motion_score > 0") and 3 not in kept("not (motion_score > 0)")


def test_columns_are_reported_and_missing_ones_refused():
    where = compile_where("motion_score > 0.02 and near_duplicate_of is null and motion_score < 1")
    assert where.columns == ("motion_score", "near_duplicate_of")
    with pytest.raises(WhereError, match=r"names column\(s\) \['aesthetic'\].*compute the signal first"):
        apply_where(TABLE, compile_where("aesthetic > 0.5"))
    with pytest.raises(WhereError, match="does not apply to the index columns"):
        apply_where(TABLE, compile_where("bucket > 3"))


@pytest.mark.parametrize("text, message", [
    ("__import__('os').system('true')", "not a condition"),
    ("n + 1 > 2", "not a number, string or boolean at 'n \\+ 1'"),
    ("n.real > 1", "not a number, string or boolean"),
    ("n == null", "IS NULL"),
    ("n > 1;", "cannot parse"),
    ("n > 1 and", "cannot parse"),
    ("lambda: 1", "not a condition"),
    ("1 < 2", "needs a column"),
    ("n in 3", "IN takes a parenthesised list"),
    ("n in (1, 'a')", "all be numbers, all strings"),
    ("n is 3", "IS takes only NULL"),
    ("n > $1", "unexpected character '\\$'"),
    ("n > f'{1}'", "not a number, string or boolean"),
    ("", "non-empty string"),
])
def test_anything_outside_the_allow_list_is_a_clear_one_line_error(text, message):
    with pytest.raises(WhereError, match=message) as info:
        parse_where(text)
    assert "\n" not in str(info.value) and repr(text) in str(info.value) or not text
