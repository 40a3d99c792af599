"""One rule for every string that comes from Azure or the operator when it is shown.

Anyone who can register an application chooses its display name, and Entra shows a secret's
first three characters as its hint; setting names, vault names, Azure's error messages and the
operator's own arguments are no more trustworthy. Shown as they are, such strings can restyle
a terminal (ANSI escape sequences), reorder what a line appears to say (bidi overrides such as
U+202E), hide text (zero-width characters), forge extra lines (line breaks) or, in Rich
markup, crash the renderer (`[/]`) and make links (`[link=...]`).

`visible` makes every such character visible as an escape (`\\x1b`, `\\u202e`); the other
functions add what each output format needs on top: Rich markup escaping (`markup`), and the
whole plan made visible before any renderer lays it out (`visible_plan`), and JSON written
with those characters as `\\uXXXX` escapes (`json_visible`: lossless, so machines read the
exact text). Markdown and HTML escape their own specials (`plan_markdown.text`, Jinja's
autoescape) after `visible`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any, TypeVar

from pydantic import BaseModel

# Categories shown as escapes: controls (C0, DEL, C1), format characters (bidi embeddings,
# overrides and isolates, zero-width joiners and spaces, the BOM, soft hyphen...), line and
# paragraph separators, surrogates, private use and unassigned code points.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})

# Plan fields whose text is a multi-line script the operator runs: their line breaks are kept.
MULTILINE_FIELDS = frozenset({"script", "undo_script"})

M = TypeVar("M", bound=BaseModel)


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _hidden(char: str, keep: str) -> bool:
    if char in keep:
        return False
    if char == "\\":
        return False
    return unicodedata.category(char) in _HIDDEN_CATEGORIES


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """The text with every control, format, separator and unassigned character shown as a
    Python-style escape; printable text (any script, emoji) is unchanged. Text of our own has
    none of these characters, so applying this to a composed line changes only the
    untrusted parts. `keep_newlines` keeps line feeds (and tabs) of multi-line scripts."""
    keep = "\n\t" if keep_newlines else ""
    if text.isprintable():
        return text  # the common case, fast: isprintable() is False for C* and Z* but " "
    return "".join(_escape_char(c) if _hidden(c, keep) else c for c in text)


def markup(text: object) -> str:
    """An untrusted value to put inside a Rich markup string: visible, and every `[` and
    backslash written so that Rich prints it as it is, never as a style, a link or a closing
    tag. (Print with `emoji=False` too, or `:skull:` becomes an emoji.)

    `rich.markup.escape` is not enough: it leaves a backslash before a `[` that is not a tag,
    which Rich then drops, and it doubles a trailing backslash, which Rich prints twice when no
    tag follows."""
    shown = visible(str(text))
    if shown.endswith("\\"):
        shown = shown[:-1] + "\\x5c"  # shown as its escape: one character, whatever follows

    def escaped(match: re.Match[str]) -> str:
        backslashes, tag, bare = match.groups()
        if tag is not None:  # Rich halves backslashes before a tag; one more escapes it
            return f"{backslashes}{backslashes}\\{tag}"
        return f"{bare}\\["  # Rich drops one backslash before a `[` that opens no tag

    return _MARKUP.sub(escaped, shown)


# A `[` that opens a Rich tag (rich.markup.RE_TAGS) with the backslashes before it, or a run of
# backslashes before a `[` that does not.
_MARKUP = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])|(\\+)\[")


def visible_plan(plan: M) -> M:
    """The plan with every text in it made visible (scripts keep their line breaks), for the
    renderers: they lay out what they are given, so one pass here covers the terminal,
    Markdown and HTML reports alike."""
    data = plan.model_dump(mode="python")
    shown = _visible_data(data, None)
    return plan if shown == data else type(plan).model_validate(shown)


def json_visible(document: str) -> str:
    """Serialized JSON with every hidden character written as its `\\uXXXX` escape: the same
    data for a parser, nothing raw for a terminal that shows the file. (Outside strings JSON
    holds only ASCII whitespace, which is kept.)"""
    if document.isascii() and "\x7f" not in document:  # JSON escapes the other C0 controls
        return document
    return "".join(json.dumps(c)[1:-1] if _hidden(c, "\n\t\r ") else c for c in document)


def _visible_data(value: Any, key: str | None) -> Any:
    if isinstance(value, str):
        return visible(value, keep_newlines=key in MULTILINE_FIELDS)
    if isinstance(value, dict):
        return {(visible(k) if isinstance(k, str) else k):
                _visible_data(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_visible_data(v, key) for v in value)
    return value
