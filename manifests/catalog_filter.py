"""``catalog.filter``: a small filter language over catalog columns, compiled to pyarrow.

The text is parsed here, by a hand-written recursive-descent parser — never ``eval``:
nothing in it can call code, read files or reach Python objects. The parsed filter is
checked against the table's schema and becomes one ``pyarrow.compute.Expression``, so
rows are filtered by Arrow before any of them is turned into Python objects.

Grammar (keywords in any letter case)::

    filter     := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" or ")" | test
    test       := column OP value | value OP column
                | column ["not"] "in" "[" value ("," value)* [","] "]"
                | column "is" ["not"] "null"
    OP         := "==" | "!=" | "<" | "<=" | ">" | ">="
    column     := a name [A-Za-z_][A-Za-z0-9_]* that is not a keyword, or `any name` in backquotes
    value      := 'text' | "text" | a number (-12, 3.5, 1e-3) | true | false

Inside quotes a backslash escapes the quote or a backslash. A quoted value compared with
a date or timestamp column is read as an ISO date or time ('2026-11-01',
'2026-11-01T08:30:00', '2026-11-01 08:30:00+01:00'); a time without an offset is UTC.
A null cell matches no comparison and no ``in`` list, also under ``not`` (as in SQL);
test it with ``is null``.

>>> parse("category == 'mugs' and not (price > 20 or sku in ['a', 'b'])").columns()
['category', 'price', 'sku']
>>> parse("price >")
Traceback (most recent call last):
manifests.catalog_filter.FilterError: syntax error at character 8: expected a value ('text', a number, true or false) after '>' but the filter ends: price >⟨here⟩
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import reduce
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # pyarrow is imported when a filter is compiled: only catalogs pay for it
    import pyarrow as pa
    import pyarrow.compute as pc

__all__ = ["Filter", "FilterError", "compile_filter", "parse"]

MAX_FILTER_CHARS = 4096
MAX_DEPTH = 32  # nesting of parentheses / not: far beyond any real filter, far below Python's stack
KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})
OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

Literal = Union[str, int, float, bool]


class FilterError(ValueError):
    """A filter that cannot be used: the message says where and why."""


# --- Syntax tree -------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    pos: int  # 0-based character offset in the filter text


@dataclass(frozen=True)
class Value:
    value: Literal
    pos: int


@dataclass(frozen=True)
class Compare:
    column: Column
    op: str
    value: Value


@dataclass(frozen=True)
class In:
    column: Column
    values: tuple[Value, ...]
    negated: bool


@dataclass(frozen=True)
class IsNull:
    column: Column
    negated: bool


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Node, ...]


Node = Union[Compare, In, IsNull, Not, BoolOp]


@dataclass(frozen=True)
class Filter:
    """A parsed filter: its text and syntax tree."""

    text: str
    tree: Node

    def columns(self) -> list[str]:
        """The column names it reads, in order of first use."""
        return list(dict.fromkeys(column.name for column in _columns(self.tree)))


def _columns(node: Node) -> list[Column]:
    if isinstance(node, (Compare, In, IsNull)):
        return [node.column]
    if isinstance(node, Not):
        return _columns(node.operand)
    return [column for operand in node.operands for column in _columns(operand)]


# --- Tokens ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    kind: str  # name | column | string | number | op | punct | keyword | end
    text: str  # the source text of the token
    value: Any
    pos: int


_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?")


def _syntax_error(text: str, pos: int, message: str) -> FilterError:
    """'syntax error at character N: message: <text before>⟨here⟩<text after>' (long text elided)."""
    before = text[max(0, pos - 40) : pos]
    after = text[pos : pos + 40]
    before = ("…" if pos > 40 else "") + before
    after += "…" if pos + 40 < len(text) else ""
    return FilterError(f"syntax error at character {pos + 1}: {message}: {before}⟨here⟩{after}")


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            pos += 1
            continue
        if char in "'\"":
            value, end = _string(text, pos)
            tokens.append(_Token("string", text[pos:end], value, pos))
            pos = end
            continue
        if char == "`":
            end = text.find("`", pos + 1)
            if end < 0:
                raise _syntax_error(text, pos, "unterminated `column name` (no closing backquote)")
            if end == pos + 1:
                raise _syntax_error(text, pos, "empty `column name`")
            tokens.append(_Token("column", text[pos : end + 1], text[pos + 1 : end], pos))
            pos = end + 1
            continue
        operator = next((op for op in OPERATORS if text.startswith(op, pos)), None)
        if operator is not None:
            tokens.append(_Token("op", operator, operator, pos))
            pos += len(operator)
            continue
        if char == "=":
            raise _syntax_error(text, pos, "use '==' to compare, not '='")
        if char in "()[],":
            tokens.append(_Token("punct", char, char, pos))
            pos += 1
            continue
        bare_date = _BARE_DATE.match(text, pos)
        if bare_date:
            raise _syntax_error(text, pos, f"quote dates and times: '{bare_date[0]}'")
        number = _NUMBER.match(text, pos)
        if number and (char != "-" or not tokens or tokens[-1].kind in ("op", "punct")):
            end = number.end()
            if end < len(text) and (text[end].isalnum() or text[end] in "_."):
                raise _syntax_error(text, pos, f"not a number: {text[pos:end + 1]!r}…")
            tokens.append(_Token("number", number[0], _number(number[0]), pos))
            pos = end
            continue
        name = _NAME.match(text, pos)
        if name:
            word = name[0]
            kind = "keyword" if word.lower() in KEYWORDS else "name"
            tokens.append(_Token(kind, word, word.lower() if kind == "keyword" else word, pos))
            pos = name.end()
            continue
        raise _syntax_error(text, pos, f"unexpected character {char!r}")
    tokens.append(_Token("end", "", None, len(text)))
    return tokens


def _string(text: str, start: int) -> tuple[str, int]:
    quote, pos, out = text[start], start + 1, []
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in (quote, "\\"):
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == quote:
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    raise _syntax_error(text, start, f"unterminated text: no closing {quote}")


def _number(text: str) -> int | float:
    if re.fullmatch(r"-?\d+", text):
        value = int(text)
        return value if -(2**63) <= value < 2**63 else float(value)
    return float(text)


# --- Parser ------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.at]

    def error(self, message: str, token: _Token | None = None) -> FilterError:
        token = token or self.token
        return _syntax_error(self.text, token.pos, message)

    def expected(self, what: str, after: _Token | None = None) -> FilterError:
        where = f" after {after.text!r}" if after is not None else ""
        if self.token.kind == "end":
            return self.error(f"expected {what}{where} but the filter ends")
        return self.error(f"expected {what}{where}, found {self.token.text!r}")

    def take(self, kind: str, value: Any = None) -> _Token | None:
        token = self.token
        if token.kind == kind and (value is None or token.value == value):
            self.at += 1
            return token
        return None

    def parse(self) -> Node:
        tree = self.or_()
        if self.token.kind != "end":
            if self.token.kind == "punct" and self.token.value == ")":
                raise self.error("unmatched ')'")
            raise self.expected("'and', 'or' or the end of the filter")
        return tree

    def or_(self) -> Node:
        operands = [self.and_()]
        while self.take("keyword", "or"):
            operands.append(self.and_())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def and_(self) -> Node:
        operands = [self.not_()]
        while self.take("keyword", "and"):
            operands.append(self.not_())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def not_(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH} levels")
        try:
            if self.take("keyword", "not"):
                return Not(self.not_())
            opening = self.take("punct", "(")
            if opening:
                inner = self.or_()
                if not self.take("punct", ")"):
                    if self.token.kind == "end":
                        raise self.error(f"'(' at character {opening.pos + 1} is never closed")
                    raise self.expected("')', 'and' or 'or'")
                return inner
            return self.test()
        finally:
            self.depth -= 1

    def operand(self) -> Column | Value | None:
        token = self.token
        if token.kind in ("name", "column"):
            self.at += 1
            return Column(token.value, token.pos)
        if token.kind in ("string", "number"):
            self.at += 1
            return Value(token.value, token.pos)
        if token.kind == "keyword" and token.value in ("true", "false"):
            self.at += 1
            return Value(token.value == "true", token.pos)
        return None

    def value(self, after: _Token | None) -> Value:
        start = self.token
        found = self.operand()
        if isinstance(found, Value):
            return found
        if isinstance(found, Column):
            raise self.error(
                f"expected a value, found the name {start.text!r}; quote text: '{start.value}'", start
            )
        raise self.expected("a value ('text', a number, true or false)", after)

    def test(self) -> Node:
        start = self.token
        left = self.operand()
        if left is None:
            if start.kind == "keyword":
                raise self.error(
                    f"expected a column name, found the keyword {start.text!r} (a column with that name: `{start.text}`)"
                )
            raise self.expected("a comparison such as name == 'value'")
        if isinstance(left, Column):
            if self.take("keyword", "is"):
                negated = bool(self.take("keyword", "not"))
                if not self.take("keyword", "null"):
                    raise self.expected("'null'", self.tokens[self.at - 1])
                return IsNull(left, negated)
            negated_in = False
            if self.token.kind == "keyword" and self.token.value == "not":
                self.at += 1
                negated_in = True
                if not (self.token.kind == "keyword" and self.token.value == "in"):
                    raise self.expected("'in' (as in: name not in ['a', 'b'])", self.tokens[self.at - 1])
            in_token = self.take("keyword", "in")
            if in_token:
                return In(left, self.value_list(in_token), negated_in)
        operator = self.take("op")
        if operator is None:
            raise self.expected("a comparison operator (==, !=, <, <=, >, >=)" + (", 'in' or 'is'" if isinstance(left, Column) else ""), start)
        after = self.token
        right = self.operand()
        if right is None and after.kind == "keyword" and after.value == "null":
            raise self.error("nothing equals null: test a missing value with 'is null' or 'is not null'", after)
        if right is None:
            raise self.expected("a value ('text', a number, true or false)" if isinstance(left, Column) else "a column name", operator)
        if isinstance(left, Column) and isinstance(right, Value):
            return Compare(left, operator.value, right)
        if isinstance(left, Value) and isinstance(right, Column):
            return Compare(right, _FLIPPED[operator.value], left)
        if isinstance(left, Column):
            raise self.error(
                f"compare a column with a value; {after.text!r} is a column name (quote it for text: '{after.value}')", after
            )
        raise self.error("compare a column with a value; both sides are values", start)

    def value_list(self, in_token: _Token) -> tuple[Value, ...]:
        if not self.take("punct", "["):
            raise self.expected("'[' starting a list of values", in_token)
        values: list[Value] = []
        while True:
            if values and self.take("punct", "]"):
                return tuple(values)
            if not values and self.token.kind == "punct" and self.token.value == "]":
                raise self.error("an empty list matches nothing; list at least one value")
            values.append(self.value(None))
            if self.take("punct", ","):
                continue
            if self.take("punct", "]"):
                return tuple(values)
            raise self.expected("',' or ']'")


def parse(text: str) -> Filter:
    """Parse a filter; raises FilterError naming the character where it went wrong."""
    if not isinstance(text, str):
        raise FilterError(f"must be text, got {type(text).__name__}")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"is {len(text)} characters long; the limit is {MAX_FILTER_CHARS}")
    if not text.strip():
        raise FilterError("is empty; leave filter out to keep every row")
    return Filter(text, _Parser(text).parse())


# --- Compiling against a schema ----------------------------------------------------------
def compile_filter(parsed: Filter, schema: pa.Schema, *, text_table: bool = False) -> pc.Expression:
    """The filter as a pyarrow expression over a table with `schema`.

    Raises FilterError listing every unknown column and type mismatch, one per line.
    `text_table`: every column holds text (CSV); a text column compared with a number or
    true/false is converted for the comparison (a cell that does not convert fails the
    filter when it is applied).
    """
    problems: list[str] = []
    expression = _Compiler(parsed.text, schema, text_table, problems).node(parsed.tree)
    if problems:
        raise FilterError("\n".join(dict.fromkeys(problems)))
    return expression


def _kind(arrow_type: pa.DataType) -> str | None:
    """The kind of values a column holds, as the filter language sees them."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        return _kind(arrow_type.value_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return "text"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    return None


_KIND_WORDS = {
    "text": "text",
    "bool": "true/false",
    "number": "numbers",
    "timestamp": "timestamps",
    "date": "dates",
}
_HOW_TO_WRITE = {
    "text": "a quoted 'text'",
    "bool": "true or false",
    "number": "a number (no quotes)",
    "timestamp": "a quoted ISO time such as '2026-11-01' or '2026-11-01T08:30:00Z'",
    "date": "a quoted ISO date such as '2026-11-01'",
}


def _literal_words(value: Literal) -> str:
    if isinstance(value, bool):
        return f"true/false ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    return f"text ({value!r})"


class _Compiler:
    def __init__(self, text: str, schema: pa.Schema, text_table: bool, problems: list[str]) -> None:
        self.text = text
        self.schema = schema
        self.text_table = text_table
        self.problems = problems

    def node(self, node: Node) -> pc.Expression:
        import pyarrow.compute as pc

        if isinstance(node, BoolOp):
            operands = [self.node(operand) for operand in node.operands]
            return reduce((lambda a, b: a & b) if node.op == "and" else (lambda a, b: a | b), operands)
        if isinstance(node, Not):
            return ~self.node(node.operand)
        if isinstance(node, IsNull):  # any column may be tested for null, whatever it holds
            if self.field(node.column, any_type=True) is None:
                return pc.scalar(True)
            test = pc.field(node.column.name).is_null()
            return ~test if node.negated else test
        field = self.field(node.column)
        if field is None:
            return pc.scalar(True)  # reported; keeps compiling to find more problems
        if isinstance(node, In):
            tests = [self.compare(field, "==", value, node.column) for value in node.values]
            matched = reduce(lambda a, b: a | b, tests)
            return ~matched if node.negated else matched
        return self.compare(field, node.op, node.value, node.column)

    def field(self, column: Column, *, any_type: bool = False) -> tuple[pc.Expression, pa.DataType] | None:
        import pyarrow as pa
        import pyarrow.compute as pc

        index = self.schema.get_field_index(column.name)
        if index < 0:
            names = self.schema.names
            shown = ", ".join(map(repr, names[:50])) + (" ..." if len(names) > 50 else "")
            self.problems.append(f"unknown column {column.name!r} (character {column.pos + 1}); available: {shown}")
            return None
        arrow_type = self.schema.field(index).type
        expression = pc.field(column.name)
        if any_type:
            return expression, arrow_type
        if pa.types.is_dictionary(arrow_type):  # compare the values, not the codes
            arrow_type = arrow_type.value_type
            expression = expression.cast(arrow_type)
        if _kind(arrow_type) is None:
            self.problems.append(
                f"column {column.name!r} holds {arrow_type}; a filter compares text, numbers, "
                "true/false, dates and timestamps (or tests `is null`)"
            )
            return None
        return expression, arrow_type

    def compare(self, field: tuple[pc.Expression, pa.DataType], op: str, value: Value, column: Column) -> pc.Expression:
        import pyarrow.compute as pc

        expression, arrow_type = field
        operand = self.literal(value, arrow_type, column)
        if operand is None:
            return pc.scalar(True)
        replacement, literal = operand
        if replacement is not None:
            expression = replacement
        return {
            "==": expression.__eq__,
            "!=": expression.__ne__,
            "<": expression.__lt__,
            "<=": expression.__le__,
            ">": expression.__gt__,
            ">=": expression.__ge__,
        }[op](literal)

    def literal(self, value: Value, arrow_type: pa.DataType, column: Column) -> tuple[Any, Any] | None:
        """(a replacement column expression or None, the literal as a pyarrow scalar)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        kind = _kind(arrow_type)
        raw = value.value
        mismatch = (
            f"type mismatch at character {value.pos + 1}: column {column.name!r} holds {_KIND_WORDS[kind]} "
            f"({arrow_type}), compared with {_literal_words(raw)}; write {_HOW_TO_WRITE[kind]}"
        )
        if kind == "text":
            if isinstance(raw, str):
                return None, pa.scalar(raw, arrow_type)
            if self.text_table:  # CSV: cells are text; convert them for this comparison
                target = pa.bool_() if isinstance(raw, bool) else pa.float64()
                return pc.field(column.name).cast(target), pa.scalar(raw, target)
            self.problems.append(mismatch)
            return None
        if kind == "bool":
            if isinstance(raw, bool):
                return None, pa.scalar(raw)
            self.problems.append(mismatch)
            return None
        if kind == "number":
            if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
                return None, pa.scalar(raw)
            self.problems.append(mismatch)
            return None
        if not isinstance(raw, str):
            self.problems.append(mismatch)
            return None
        try:
            when = _iso(raw, kind)
        except ValueError as error:
            self.problems.append(
                f"type mismatch at character {value.pos + 1}: column {column.name!r} holds {_KIND_WORDS[kind]} "
                f"({arrow_type}); {raw!r} is not {_HOW_TO_WRITE[kind].removeprefix('a quoted ')} ({error})"
            )
            return None
        if kind == "timestamp" and arrow_type.tz is None and when.tzinfo is not None:
            when = when.astimezone(timezone.utc).replace(tzinfo=None)  # naive columns are taken as UTC
        try:
            return None, pa.scalar(when, arrow_type)
        except (pa.ArrowInvalid, OverflowError, ValueError) as error:
            self.problems.append(f"value at character {value.pos + 1} does not fit column {column.name!r} ({arrow_type}): {error}")
            return None


def _iso(text: str, kind: str) -> date | datetime:
    """An ISO date (for date columns) or date/time (for timestamp columns); a trailing Z means UTC."""
    text = text.strip()
    if kind == "date":
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError("expected YYYY-MM-DD")
        return date.fromisoformat(text)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)
