"""``catalog.filter``: a SQL ``WHERE`` condition over catalog columns, compiled to pyarrow.

The text is parsed by sqlglot (MySQL quoting: ``'text'`` or ``"text"``, ```any column name```)
and never evaluated: the tree is checked against what a condition on one table may say,
then compiled, against the table's schema, into one ``pyarrow.compute.Expression``, so rows
are filtered by Arrow before any of them becomes a Python object. What a filter may say::

    column = value    (also == != <> < <= > >=; the value may stand on the left)
    column LIKE 'cup%'   column ILIKE 'cup%'   (% any text, _ one character)
    column IN ('mugs', 'cups')   column BETWEEN 5 AND 9   column IS NULL
    NOT, AND, OR, parentheses;  lower(column), upper(column) on text columns

Values: ``'text'``, numbers (-12, 3.5, 1e-3), ``true``/``false``; a quoted value compared with
a date or timestamp column is an ISO date or time ('2026-11-01', '2026-11-01T08:30:00',
'2026-11-01 08:30:00+01:00'; without an offset, UTC). A null cell matches no comparison,
also under ``NOT`` (as in SQL): test it with ``IS NULL``. Refused, each with the character
where it stands: subqueries, columns of other tables, functions not listed above, columns
compared with columns, arithmetic, parameters, more than one statement.

>>> parse("category = 'mugs' AND NOT (price > 20 OR sku IN ('a', 'b'))").columns()
['category', 'price', 'sku']
>>> parse("price >")
Traceback (most recent call last):
manifests.catalog_filter.FilterError: syntax error at character 7: '>' needs a value on each side: price ⟨here⟩>
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from .fields import did_you_mean

if TYPE_CHECKING:  # pyarrow and sqlglot are imported when a catalog has a filter: only those pay for them
    import pyarrow as pa
    import pyarrow.compute as pc
    from sqlglot import exp

__all__ = ["Filter", "FilterError", "compile_filter", "iso", "parse"]

MAX_FILTER_CHARS = 4096
MAX_DEPTH = 32  # nesting of parentheses / NOT: far beyond any real filter, far below Python's stack
DIALECT = "mysql"  # quoting: 'text' or "text", `column name`
FUNCTIONS = ("lower", "upper")  # text -> text, applied to a column

Value = str | int | float | bool


class FilterError(ValueError):
    """A filter that cannot be used: the message says where and why."""


@dataclass(frozen=True)
class Filter:
    """A parsed, checked filter: its text and sqlglot tree."""

    text: str
    tree: exp.Expression

    def columns(self) -> list[str]:
        """The column names it reads, in order of first use in the text."""
        from sqlglot import exp

        found = sorted(self.tree.find_all(exp.Column), key=position)
        return list(dict.fromkeys(column.name for column in found))


# --- Parsing -----------------------------------------------------------------------------
def parse(text: str) -> Filter:
    """Parse and check a filter; raises FilterError naming the character where it went wrong."""
    import sqlglot
    from sqlglot.errors import ParseError, TokenError

    if not isinstance(text, str):
        raise FilterError(f"must be text, got {type(text).__name__}")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"is {len(text)} characters long; the limit is {MAX_FILTER_CHARS}")
    if not text.strip():
        raise FilterError("is empty; leave filter out to keep every row")
    try:
        statements = sqlglot.parse(text, read=DIALECT)
    except TokenError:
        at = _unclosed_quote(text)
        what = "column name" if text[at] == "`" else "text"
        raise _syntax_error(text, at, f"unterminated {what}: {text[at]} is never closed") from None
    except ParseError as error:
        raise _from_parse_error(text, error) from None
    except RecursionError:
        raise FilterError(f"is nested deeper than {MAX_DEPTH} levels") from None
    if len(statements) != 1 or statements[0] is None:
        raise _syntax_error(text, text.find(";") if ";" in text else 0, "a filter is one condition; remove ';' and what follows")
    tree = statements[0]
    _check(text, tree)
    return Filter(text, tree)


def _syntax_error(text: str, at: int, message: str) -> FilterError:
    """'syntax error at character N: message: text before⟨here⟩text after' (N counts from 1)."""
    at = max(0, min(at, len(text)))
    return FilterError(f"syntax error at character {at + 1}: {message}: {text[:at]}⟨here⟩{text[at:]}")


def _offset(text: str, line: int, col: int) -> int:
    """0-based offset of sqlglot's 1-based (line, column)."""
    lines = text.split("\n")
    return sum(len(x) + 1 for x in lines[: line - 1]) + col - 1


def _from_parse_error(text: str, error: Any) -> FilterError:
    details = (getattr(error, "errors", None) or [{}])[0]
    highlight = details.get("highlight") or ""
    if "line" not in details:
        return _syntax_error(text, len(text), "not a condition")
    end = _offset(text, details["line"], details["col"])
    at = end - len(highlight) + 1
    description = details.get("description") or ""
    missing = re.search(r"Required keyword: '\w+' missing for .*\.(\w+)'>", description)
    if missing:
        message = f"{highlight!r} needs a value on each side" if highlight else "a condition is unfinished"
    elif description.startswith("Expecting )"):
        message = "'(' is never closed: expected ')'"
    else:
        message = f"unexpected {highlight!r}" if highlight else description
    return _syntax_error(text, at, message)


def _unclosed_quote(text: str) -> int:
    """Offset of the quote that is never closed (a backslash escapes within text)."""
    at, quote, n = 0, None, 0
    while n < len(text):
        char = text[n]
        if quote is None and char in "'\"`":
            quote, at = char, n
        elif quote is not None and char == "\\" and quote != "`":
            n += 1
        elif char == quote:
            quote = None
        n += 1
    return at


def position(node: exp.Expression) -> int:
    """0-based offset where `node` starts in the text (its first located token)."""
    from sqlglot import exp

    starts = [n.meta["start"] for n in node.walk() if isinstance(n, (exp.Identifier, exp.Literal)) and "start" in n.meta]
    return min(starts, default=0)


# --- What a filter may say -----------------------------------------------------------------
def _check(text: str, tree: exp.Expression) -> None:
    """Raise FilterError at the first thing a condition on one table may not say."""
    from sqlglot import exp

    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FilterError(f"is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, exp.Query):
            raise _syntax_error(text, 0, "a filter is a condition, not a query: write only what would follow WHERE")
        refused = _refusal(node)
        if refused is not None:
            message, where = refused
            raise _syntax_error(text, _start(text, where), message)
        for child in reversed(conditions(node)):
            stack.append((child, depth + (0 if _is_connector(node) else 1)))


def _start(text: str, node: exp.Expression) -> int:
    """0-based offset of `node` in the text; a function starts at its name."""
    from sqlglot import exp

    if isinstance(node, (exp.Func, exp.Anonymous)):
        found = text.lower().find(_function_name(node) + "(")
        if found >= 0:
            return found
    return position(node)


def _is_connector(node: exp.Expression) -> bool:
    from sqlglot import exp

    return isinstance(node, exp.Connector)


def conditions(node: exp.Expression) -> list[exp.Expression]:
    """The conditions inside a boolean node (AND/OR chains flattened, without recursion)."""
    from sqlglot import exp

    if isinstance(node, exp.Connector):
        return list(node.flatten())
    if isinstance(node, (exp.Not, exp.Paren)):
        return [node.this]
    return []


_COMPARISONS = ("EQ", "NEQ", "GT", "GTE", "LT", "LTE")


Refusal = tuple[str, "exp.Expression"]  # (why, the part of the filter it is about)


def _refusal(node: exp.Expression) -> Refusal | None:
    """Why `node`, standing where a condition must, is refused; None if it is a condition."""
    from sqlglot import exp

    if isinstance(node, (exp.Connector, exp.Not, exp.Paren)):
        return None
    if node.find(exp.Query, exp.Subquery, exp.Exists) is not None:
        return "subqueries are not allowed: a filter is a condition on the catalog's own columns", node
    if isinstance(node, exp.Is):
        if not isinstance(node.expression, exp.Null):
            return "IS tests NULL only: write column IS NULL or column IS NOT NULL (for true/false: column = true)", node
        return _operand_refusal(node.this, column=True)
    if type(node).__name__ in _COMPARISONS:
        left, right = node.this, node.expression
        if isinstance(left, exp.Null) or isinstance(right, exp.Null):
            return "nothing equals NULL: test a missing value with IS NULL or IS NOT NULL", node
        if _is_value(left) and _is_value(right):
            return "both sides are values: compare a column with a value", node
        if not _is_value(left) and not _is_value(right):
            if isinstance(right, exp.Column) and not right.table:
                return (f"a column is compared with a column ({right.name!r}); quote text ('{right.name}'), "
                        "or compare each column with a value"), right
            return _operand_refusal(right, column=False) or _operand_refusal(left, column=False) or (
                "compare a column with a value", node)
        column, value = (left, right) if _is_value(right) else (right, left)
        return _operand_refusal(column, column=True) or _operand_refusal(value, column=False)
    if isinstance(node, (exp.Like, exp.ILike)):
        if not (isinstance(node.expression, exp.Literal) and node.expression.is_string):
            return "LIKE takes a quoted pattern such as 'cup%'", node
        return _operand_refusal(node.this, column=True)
    if isinstance(node, exp.In):
        if not node.expressions:
            return "IN needs a list of values: column IN ('a', 'b')", node
        return _operand_refusal(node.this, column=True) or next(
            (p for p in (_operand_refusal(v, column=False) for v in node.expressions) if p), None)
    if isinstance(node, exp.Between):
        return (_operand_refusal(node.this, column=True) or _operand_refusal(node.args["low"], column=False)
                or _operand_refusal(node.args["high"], column=False))
    if isinstance(node, exp.Escape):
        return "LIKE ... ESCAPE is not supported: match '%' or '_' literally with a backslash ('100\\%')", node
    if isinstance(node, (exp.Column, exp.Literal, exp.Boolean)):
        return "expected a condition such as column = value, not a lone column or value", node
    return f"{_words(node)} is not allowed in a filter", node


def _operand_refusal(node: exp.Expression, *, column: bool) -> Refusal | None:
    """Why `node` cannot stand as a column operand (column=True) or a value (column=False)."""
    from sqlglot import exp

    if column:
        if isinstance(node, exp.Column):
            if node.table:
                return (f"columns of other tables are not allowed ({node.sql(dialect=DIALECT)}): "
                        "name a column of the catalog (quote a name with a dot in `backquotes`)"), node
            return None
        if isinstance(node, exp.Func) and _function_name(node) in FUNCTIONS:
            args = [a for a in node.args.values() if a is not None]
            if len(args) == 1 and isinstance(args[0], exp.Column) and not args[0].table:
                return None
            return f"{_function_name(node)}() takes one column of the catalog", node
        if isinstance(node, (exp.Func, exp.Anonymous)):
            name = _function_name(node)
            return f"function {name}() is not allowed{did_you_mean(name, FUNCTIONS)}; allowed: {', '.join(FUNCTIONS)}", node
        return f"expected a column, got {_words(node)}", node
    if _is_value(node):
        return None
    if isinstance(node, exp.Sub) and re.fullmatch(r"\d{4}-\d{1,2}(-\d{1,2})?", node.sql(dialect=DIALECT).replace(" ", "")):
        return f"quote dates and times: '{node.sql(dialect=DIALECT).replace(' ', '')}'", node
    if isinstance(node, exp.Column):
        return f"a column is compared with a column ({node.name!r}); quote text ('{node.name}')", node
    return f"expected a value ('text', a number, true or false), got {_words(node)}", node


def _function_name(node: exp.Expression) -> str:
    from sqlglot import exp

    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _words(node: exp.Expression) -> str:
    """What a refused node is, for a message."""
    from sqlglot import exp

    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg)):
        return f"arithmetic ({node.sql(dialect=DIALECT)})"
    if isinstance(node, exp.Dot):
        return f"a dotted name or call ({node.sql(dialect=DIALECT)[:40]})"
    if isinstance(node, (exp.Placeholder, exp.Parameter)):
        return f"a parameter ({node.sql(dialect=DIALECT)})"
    if isinstance(node, (exp.Func, exp.Anonymous)):
        return f"function {_function_name(node)}()"
    return f"{type(node).__name__} ({node.sql(dialect=DIALECT)[:40]})"


def _is_value(node: exp.Expression) -> bool:
    return value_of(node) is not None


def value_of(node: exp.Expression) -> Value | None:
    """The Python value of a literal ('text', number, -number, true/false, DATE 'x'), else None."""
    from sqlglot import exp

    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string and node.to.is_type(
            "date", "datetime", "timestamp", "timestamptz"):
        return node.this.this
    sign = 1
    if isinstance(node, exp.Neg):
        node, sign = node.this, -1
    if not isinstance(node, exp.Literal):
        return None
    if node.is_string:
        return node.this if sign == 1 else None
    number = float(node.this) if re.search(r"[.eE]", node.this) else int(node.this)
    return sign * number


# --- Compiling against a schema ----------------------------------------------------------
def compile_filter(parsed: Filter, schema: pa.Schema, *, text_table: bool = False) -> pc.Expression:
    """The filter as a pyarrow expression over a table with `schema`.

    Raises FilterError listing every type mismatch, one per line (unknown columns are
    reported by the caller, which knows the file). `text_table`: every column holds text
    (CSV); a text column compared with a number or true/false is converted for the
    comparison (a cell that does not convert fails the filter when it is applied).
    """
    from .filter_compile import Compiler

    problems: list[str] = []
    expression = Compiler(schema, text_table, problems).condition(parsed.tree)
    if problems:
        raise FilterError("\n".join(dict.fromkeys(problems)))
    return expression


def iso(text: str, kind: str) -> date | datetime:
    """An ISO date (for date columns) or date/time (for timestamp columns); a trailing Z means UTC."""
    text = text.strip()
    if kind == "date":
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError("expected YYYY-MM-DD")
        return date.fromisoformat(text)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)
