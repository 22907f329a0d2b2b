"""Read-time filters over index columns: ``"motion_score > 0.02 and near_duplicate_of is null"``
becomes a ``pyarrow.compute.Expression``, so thresholds are chosen when training or exporting.

The text is tokenised (SQL words such as ``is null``, ``AND``, ``=``, ``<>`` become Python's), parsed
with ``ast`` and walked node by node through an allow-list; nothing is ever evaluated or executed.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

ALLOWED = "comparisons (< <= > >= == != =), and/or/not, IS [NOT] NULL, [NOT] IN (...), numbers, strings, columns"
# SQL spellings → Python's; matched case-insensitively on whole name tokens
_WORDS = {"and": "and", "or": "or", "not": "not", "is": "is", "in": "in", "null": "None", "none": "None",
          "true": "True", "false": "False"}
_COMPARE = {ast.Lt: "__lt__", ast.LtE: "__le__", ast.Gt: "__gt__", ast.GtE: "__ge__", ast.Eq: "__eq__",
            ast.NotEq: "__ne__"}


class WhereError(ValueError):
    """A filter that cannot be parsed or applied; the message names the filter and the bad part."""


@dataclass(frozen=True)
class Where:
    """A parsed filter: its text, the Arrow expression, and the index columns it reads."""

    text: str
    expression: pc.Expression
    columns: tuple[str, ...]


def _python_text(text: str) -> str:
    """The filter with SQL words and operators replaced by Python's, tokens joined by spaces."""
    out: list[str] = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        raise WhereError(f"bad where filter {text!r}: {exc.args[0] if exc.args else exc}") from None
    previous = None
    lists: list[list] = []  # per open parenthesis: [opened after IN, saw a comma at its depth]
    for token in tokens:
        kind, string = token.type, token.string
        if kind in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT):
            continue
        if kind == tokenize.ERRORTOKEN and not string.isspace():
            raise WhereError(f"bad where filter {text!r}: unexpected character {string!r}; allowed: {ALLOWED}")
        if kind == tokenize.NAME and string.lower() in _WORDS:
            string = _WORDS[string.lower()]
        elif kind == tokenize.OP and string == "=":
            string = "=="
        elif kind == tokenize.OP and string == ">" and previous is not None and previous.string == "<" \
                and previous.end == token.start:
            out[-1], string = "!=", ""  # SQL's <>
        if kind == tokenize.OP and string == "(":
            lists.append([bool(out) and out[-1] == "in", False])
        elif kind == tokenize.OP and string == "," and lists:
            lists[-1][1] = True
        elif kind == tokenize.OP and string == ")" and lists:
            after_in, comma = lists.pop()
            if after_in and not comma and out[-1] != "(":
                out.append(",")  # IN ('a') is a one-value list, not a parenthesised value
        if string:
            out.append(string)
        previous = token
    return " ".join(out)


def compile_where(text: str) -> Where:
    """Parse ``text`` into a :class:`Where`; a clear one-line :class:`WhereError` names what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise WhereError(f"a where filter is a non-empty string, got {text!r}")
    source = _python_text(text)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        near = source[max(0, (exc.offset or 1) - 1):][:20]
        raise WhereError(f"bad where filter {text!r}: cannot parse near {near!r}; allowed: {ALLOWED}") from None
    columns: list[str] = []
    expression = _Builder(text, source, columns).predicate(tree.body)
    return Where(text=text, expression=expression, columns=tuple(dict.fromkeys(columns)))


def parse_where(text: str) -> pc.Expression:
    """``"motion_score > 0.02 and near_duplicate_of is null"`` → a ``pyarrow.compute.Expression``."""
    return compile_where(text).expression


class _Builder:
    """Walks the allowed nodes of a parsed filter into an Arrow expression; anything else is refused."""

    def __init__(self, text: str, source: str, columns: list[str]):
        self.text, self.source, self.columns = text, source, columns

    def fail(self, node: ast.AST, why: str) -> WhereError:
        part = ast.get_source_segment(self.source, node) or type(node).__name__
        return WhereError(f"bad where filter {self.text!r}: {why} at {part!r}; allowed: {ALLOWED}")

    def predicate(self, node: ast.AST) -> pc.Expression:
        if isinstance(node, ast.BoolOp):
            parts = [self.predicate(v) for v in node.values]
            combined = parts[0]
            for part in parts[1:]:
                combined = (combined & part) if isinstance(node.op, ast.And) else (combined | part)
            return combined
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self.predicate(node.operand)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name):  # a boolean column on its own
            return self.column(node)
        raise self.fail(node, "not a condition")

    def compare(self, node: ast.Compare) -> pc.Expression:
        result, left = None, node.left
        for op, right in zip(node.ops, node.comparators):  # a < b < c is (a < b) and (b < c)
            part = self.one_comparison(left, op, right)
            result = part if result is None else result & part
            left = right
        return result

    def one_comparison(self, left: ast.AST, op: ast.cmpop, right: ast.AST) -> pc.Expression:
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right, ast.Constant) and right.value is None):
                raise self.fail(right, "IS takes only NULL")
            column = self.column(left)
            return column.is_null() if isinstance(op, ast.Is) else column.is_valid()
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (ast.Tuple, ast.List, ast.Set)) or not right.elts:
                raise self.fail(right, "IN takes a parenthesised list of values")
            values = [self.literal(v) for v in right.elts]
            kinds = {"bool" if isinstance(v, bool) else "str" if isinstance(v, str) else "number" for v in values}
            if len(kinds) > 1:
                raise self.fail(right, "IN values must all be numbers, all strings or all booleans")
            member = self.column(left).isin(pa.array(values))
            return member if isinstance(op, ast.In) else ~member
        if type(op) not in _COMPARE:
            raise self.fail(op, "operator not allowed")
        if any(isinstance(side, ast.Constant) and side.value is None for side in (left, right)):
            raise self.fail(right, "compare with NULL using IS NULL / IS NOT NULL")
        a, b = self.operand(left), self.operand(right)
        if not any(isinstance(side, ast.Name) for side in (left, right)):
            raise self.fail(left, "a comparison needs a column")
        return getattr(a, _COMPARE[type(op)])(b)

    def operand(self, node: ast.AST):
        if isinstance(node, ast.Name):
            return self.column(node)
        return pc.scalar(self.literal(node))

    def column(self, node: ast.AST) -> pc.Expression:
        if not isinstance(node, ast.Name) or node.id in ("None", "True", "False"):
            raise self.fail(node, "expected a column name")
        self.columns.append(node.id)
        return pc.field(node.id)

    def literal(self, node: ast.AST):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.literal(node.operand)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(node, "a sign goes before a number only")
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
            if node.value is None:
                raise self.fail(node, "NULL is not a value here (use IS NULL)")
            return node.value
        raise self.fail(node, "not a number, string or boolean")


def apply_where(table: pa.Table, where: Where, what: str = "index") -> pa.Table:
    """Rows of ``table`` for which the filter is true (a null result drops the row, as in SQL)."""
    check_columns(where, table.schema.names, what)
    try:
        return table.filter(where.expression)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise WhereError(f"where filter {where.text!r} does not apply to the {what} columns: "
                         f"{str(exc).splitlines()[0]}") from None


def check_columns(where: Where, available, what: str = "index") -> None:
    """Refuse a filter that names a column the table lacks (for example a score not yet computed)."""
    missing = [c for c in where.columns if c not in set(available)]
    if missing:
        raise WhereError(f"where filter {where.text!r} names column(s) {missing} that the {what} does not have "
                         f"(columns: {sorted(available)}); compute the signal first or fix the name")
