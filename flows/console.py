"""What the CLI prints, and how: user-supplied strings (paths, ids, reasons, messages,
URLs) are always printed as text — rich never reads them as markup, so ``out[/x]`` or
``job[bold]`` print as written and cannot crash the CLI. Style comes only from here.

>>> from rich.console import Console
>>> console = Console(width=60, color_system=None)
>>> say(console, "out[/x] and [bold]")
out[/x] and [bold]
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

__all__ = ["err", "error", "out", "say", "text"]

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)

Styled = str | tuple[str, str]  # text, or (text, rich style)


def text(*parts: Styled) -> Text:
    """A ``Text`` of `parts`, each printed verbatim; a ``(text, style)`` pair is styled.
    Use it for table titles and cells."""
    line = Text()
    for part in parts:
        if isinstance(part, tuple):
            line.append(str(part[0]), style=part[1])
        else:
            line.append(str(part))
    return line


def say(console: Console, *parts: Styled) -> None:
    """Print `parts` on one line (see :func:`text`)."""
    console.print(text(*parts))


def error(message: str) -> None:
    """``error: message`` on stderr, the message verbatim."""
    say(err, ("error", "bold red"), ": ", message)
