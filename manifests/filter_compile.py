"""A checked ``catalog.filter`` tree (``manifests.catalog_filter``) compiled against a table's
schema into one ``pyarrow.compute.Expression``, with typed values: a text column takes
'text', a number column numbers, a date or timestamp column an ISO date or time in quotes.
Every mismatch is collected (with the character of the value), not only the first.
"""

from __future__ import annotations

import math
from datetime import timezone
from functools import reduce
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from .catalog_filter import Value, conditions, iso, position, value_of

_KIND_WORDS = {"text": "text", "bool": "true/false", "number": "numbers", "timestamp": "timestamps", "date": "dates"}
_HOW_TO_WRITE = {
    "text": "a quoted 'text'",
    "bool": "true or false",
    "number": "a number (no quotes)",
    "timestamp": "a quoted ISO time such as '2026-11-01' or '2026-11-01T08:30:00Z'",
    "date": "a quoted ISO date such as '2026-11-01'",
}
# comparison -> (pyarrow operator, the same comparison with its sides swapped)
_OPERATORS = {"EQ": ("__eq__", "EQ"), "NEQ": ("__ne__", "NEQ"), "LT": ("__lt__", "GT"), "LTE": ("__le__", "GTE"),
              "GT": ("__gt__", "LT"), "GTE": ("__ge__", "LTE")}
_TEXT_FUNCTIONS = {"lower": pc.utf8_lower, "upper": pc.utf8_upper}


def kind(arrow_type: pa.DataType) -> str | None:
    """The kind of values a column holds, as a filter sees them."""
    if pa.types.is_dictionary(arrow_type):
        return kind(arrow_type.value_type)
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


def _value_words(value: Value) -> str:
    if isinstance(value, bool):
        return f"true/false ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    return f"text ({value!r})"


class Compiler:
    """Compiles conditions; appends what does not fit the schema to `problems`."""

    def __init__(self, schema: pa.Schema, text_table: bool, problems: list[str]) -> None:
        self.schema = schema
        self.text_table = text_table
        self.problems = problems

    def condition(self, node: exp.Expression) -> pc.Expression:
        if isinstance(node, exp.Connector):
            parts = [self.condition(c) for c in conditions(node)]
            return reduce((lambda a, b: a & b) if isinstance(node, exp.And) else (lambda a, b: a | b), parts)
        if isinstance(node, exp.Paren):
            return self.condition(node.this)
        if isinstance(node, exp.Not):
            return ~self.condition(node.this)
        if isinstance(node, exp.Is):  # any column may be tested for null, whatever it holds
            column = self.column(node.this, any_type=True)
            return pc.scalar(True) if column is None else column[0].is_null()
        if isinstance(node, (exp.Like, exp.ILike)):
            return self.like(node)
        if isinstance(node, exp.In):
            tests = [self.compare(node.this, "EQ", value) for value in node.expressions]
            return reduce(lambda a, b: a | b, tests)
        if isinstance(node, exp.Between):
            return self.compare(node.this, "GTE", node.args["low"]) & self.compare(node.this, "LTE", node.args["high"])
        name = type(node).__name__
        left, right = node.this, node.expression
        if value_of(right) is not None:
            return self.compare(left, name, right)
        return self.compare(right, _OPERATORS[name][1], left)  # '20 <= price' is 'price >= 20'

    def column(self, node: exp.Expression, *, any_type: bool = False) -> tuple[pc.Expression, pa.DataType] | None:
        """(expression, type) of a column operand — `name` or lower(name) — or None (reported)."""
        function = None
        if not isinstance(node, exp.Column):
            function, node = node.sql_name().lower(), next(a for a in node.args.values() if a is not None)
        index = self.schema.get_field_index(node.name)
        if index < 0:  # reported by the caller, which names the file
            return None
        arrow_type = self.schema.field(index).type
        expression = pc.field(node.name)
        if any_type:
            return expression, arrow_type
        if pa.types.is_dictionary(arrow_type):  # compare the values, not the codes
            arrow_type = arrow_type.value_type
            expression = expression.cast(arrow_type)
        if kind(arrow_type) is None:
            self.problems.append(f"column {node.name!r} holds {arrow_type}; a filter compares text, numbers, "
                                 "true/false, dates and timestamps (or tests IS NULL)")
            return None
        if function is not None:
            if kind(arrow_type) != "text":
                self.problems.append(f"{function}() at character {position(node) + 1} takes text; column "
                                     f"{node.name!r} holds {_KIND_WORDS[kind(arrow_type)]} ({arrow_type})")
                return None
            expression = _TEXT_FUNCTIONS[function](expression)
        return expression, arrow_type

    def like(self, node: exp.Like | exp.ILike) -> pc.Expression:
        column = self.column(node.this)
        if column is None:
            return pc.scalar(True)
        expression, arrow_type = column
        if kind(arrow_type) != "text":
            self.problems.append(f"LIKE at character {position(node) + 1} matches text; column {node.this.name!r} "
                                 f"holds {_KIND_WORDS[kind(arrow_type)]} ({arrow_type}): compare it with = < >")
            return pc.scalar(True)
        matched = pc.match_like(expression, node.expression.this, ignore_case=isinstance(node, exp.ILike))
        return ~matched if node.args.get("negate") else matched

    def compare(self, operand: exp.Expression, name: str, value_node: exp.Expression) -> pc.Expression:
        column = self.column(operand)
        if column is None:
            return pc.scalar(True)  # reported; keeps compiling to find more problems
        expression, arrow_type = column
        literal = self.literal(value_node, arrow_type, operand)
        if literal is None:
            return pc.scalar(True)
        replacement, scalar = literal
        return getattr(replacement if replacement is not None else expression, _OPERATORS[name][0])(scalar)

    def literal(self, node: exp.Expression, arrow_type: pa.DataType, operand: exp.Expression) -> tuple[Any, Any] | None:
        """(a replacement column expression or None, the value as a pyarrow scalar), or None (reported)."""
        held = kind(arrow_type)
        raw = value_of(node)
        at = position(node) + 1
        name = operand.name if isinstance(operand, exp.Column) else operand.find(exp.Column).name
        mismatch = (f"type mismatch at character {at}: column {name!r} holds {_KIND_WORDS[held]} ({arrow_type}), "
                    f"compared with {_value_words(raw)}; write {_HOW_TO_WRITE[held]}")
        if held == "text":
            if isinstance(raw, str):
                return None, pa.scalar(raw, arrow_type)
            if self.text_table and isinstance(operand, exp.Column):  # CSV: cells are text; convert them here
                target = pa.bool_() if isinstance(raw, bool) else pa.float64()
                return pc.field(name).cast(target), pa.scalar(raw, target)
        elif held == "bool":
            if isinstance(raw, bool):
                return None, pa.scalar(raw)
        elif held == "number":
            if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
                return None, pa.scalar(raw)
        elif isinstance(raw, str):
            return self.when(raw, held, arrow_type, name, at)
        self.problems.append(mismatch)
        return None

    def when(self, raw: str, held: str, arrow_type: pa.DataType, name: str, at: int) -> tuple[None, Any] | None:
        try:
            value = iso(raw, held)
        except ValueError as error:
            self.problems.append(f"type mismatch at character {at}: column {name!r} holds {_KIND_WORDS[held]} "
                                 f"({arrow_type}); {raw!r} is not {_HOW_TO_WRITE[held].removeprefix('a quoted ')} ({error})")
            return None
        if held == "timestamp" and arrow_type.tz is None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)  # naive columns are taken as UTC
        try:
            return None, pa.scalar(value, arrow_type)
        except (pa.ArrowInvalid, OverflowError, ValueError) as error:
            self.problems.append(f"value at character {at} does not fit column {name!r} ({arrow_type}): {error}")
            return None
