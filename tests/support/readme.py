"""README.rst's literal blocks and the ``.. test:`` comments that say how the tests run them.

A comment line before the paragraph that introduces a literal block (the one ending in ``::``)
marks the block; docutils renders nothing for it::

    .. test: shell
    .. test: shell exit=2
    .. test: sql setup name=hook0-outbox
    .. test: cron
    .. test: not-run needs Docker

Kinds: ``shell`` (bash), ``sql`` (psycopg2, autocommit), ``cron`` (a crontab line: the five
schedule fields are dropped and the command runs in bash), ``not-run`` (followed by the reason).
Options: ``exit=N`` (expected exit status, default 0), ``name=NAME`` (tests fetch the block by
name), ``setup`` (the block also runs before every later section, as an operator who followed the
set-up would have), ``fresh`` (from this block on, a new database without the set-up SQL; the
shell keeps its exports: on a section's first block, the set-up's). A shell block that is a
transcript (lines starting ``$ ``) runs those lines only; the others are output.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.rst"

KINDS = ("shell", "sql", "cron", "not-run")
FLAGS = frozenset({"setup", "fresh"})
MARKER_RE = re.compile(r"^\.\. test: *(?P<kind>\S+)(?P<rest>.*)$")
# A block "is a command" when it starts like something an operator would type or paste.
COMMAND_RE = re.compile(
    r"^(\$ )?(wal2http|export|docker|pip3?|make|python3?|systemctl|psql|curl|install|cp|ln|man)\b"
    r"|^[A-Z][A-Z0-9_]*=\S*\s+\S"
    r"|^(CREATE|ALTER|GRANT|REVOKE|SELECT|INSERT|UPDATE|DELETE|BEGIN|DROP|COMMENT|TRUNCATE|SHOW)\b"
    r"|^[*0-9/,-]+ [*0-9/,-]+ [*0-9/,-]+ [*0-9/,-]+ [*0-9/,-]+ "
)


class ReadmeError(ValueError):
    """README.rst has a malformed ``.. test:`` marker."""


@dataclass(frozen=True)
class Block:
    """One literal block of README.rst, with its marker if it has one."""

    text: str  # dedented, without trailing blank lines
    line: int  # 1-based line number of the block's first line
    section: str  # the top-level section it is in
    kind: str | None = None  # None: no marker
    name: str | None = None
    exit: int = 0
    flags: frozenset[str] = field(default_factory=frozenset)
    reason: str = ""  # of a not-run block

    @property
    def is_command(self) -> bool:
        first = next((x for x in self.text.splitlines() if x.strip() and not x.startswith("#")), "")
        return COMMAND_RE.match(first) is not None

    @property
    def where(self) -> str:
        return f"README.rst line {self.line} ({self.section})"

    def statements(self) -> list[str]:
        """The SQL statements of the block, each with its ``;``, comments kept."""
        return [s.strip() for s in _split_sql(self.text) if s.strip() and not _only_comments(s)]


def parse(text: str) -> list[Block]:
    """Every literal block of an RST text, each with the marker that precedes it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    section = ""
    marker: tuple[int, dict[str, object]] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and _is_top_level_title(lines, i):
            section = line.strip()
        found = MARKER_RE.match(line)
        if found:
            if marker is not None:
                raise ReadmeError(f"README.rst line {marker[0]}: marker not followed by a literal block")
            marker = (i + 1, _parse_marker(found, i + 1))
            if not _introduces_block(lines, i + 1):
                raise ReadmeError(f"README.rst line {i + 1}: a '.. test:' comment must come just before the "
                                  "paragraph that introduces a literal block (ending in '::')")
            i += 1
            continue
        if line.rstrip().endswith("::") and not line.lstrip().startswith(".. "):
            indent = len(line) - len(line.lstrip())
            start = i + 1
            while start < len(lines) and not lines[start].strip():
                start += 1
            end = start
            while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
                end += 1
            body = textwrap.dedent("\n".join(lines[start:end])).rstrip()
            options = marker[1] if marker else {}
            blocks.append(Block(body, start + 1, section, **options))  # type: ignore[arg-type]
            marker = None
            i = end
            continue
        i += 1
    if marker is not None:
        raise ReadmeError(f"README.rst line {marker[0]}: marker not followed by a literal block")
    return blocks


@cache
def blocks() -> tuple[Block, ...]:
    return tuple(parse(README.read_text(encoding="utf-8")))


def block(name: str) -> Block:
    """The README block marked ``name=NAME``."""
    for b in blocks():
        if b.name == name:
            return b
    raise KeyError(f"README.rst has no block marked name={name}")


def _parse_marker(found: re.Match[str], line: int) -> dict[str, object]:
    kind, rest = found.group("kind"), found.group("rest").strip()
    if kind not in KINDS:
        raise ReadmeError(f"README.rst line {line}: unknown test kind {kind!r}; one of {', '.join(KINDS)}")
    if kind == "not-run":
        if not rest:
            raise ReadmeError(f"README.rst line {line}: '.. test: not-run' needs a reason")
        return {"kind": kind, "reason": rest}
    options: dict[str, object] = {"kind": kind}
    flags = set()
    for word in rest.split():
        key, equals, value = word.partition("=")
        if not equals and key in FLAGS:
            flags.add(key)
        elif key == "exit" and value.isdigit():
            options["exit"] = int(value)
        elif key == "name" and value:
            options["name"] = value
        else:
            raise ReadmeError(f"README.rst line {line}: unknown marker option {word!r}")
    options["flags"] = frozenset(flags)
    return options


def _introduces_block(lines: list[str], i: int) -> bool:
    """True when, after blank lines, the paragraph starting at ``i`` ends with ``::``."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    while i < len(lines) and lines[i].strip():
        if lines[i].rstrip().endswith("::"):
            return i + 1 >= len(lines) or not lines[i + 1].strip()
        i += 1
    return False


def _is_top_level_title(lines: list[str], i: int) -> bool:
    title, underline = lines[i].rstrip(), lines[i + 1].rstrip()
    overlined = i > 0 and set(lines[i - 1].rstrip()) == {"="}
    return bool(title) and not overlined and set(underline) == {"="} and len(underline) >= len(title)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _split_sql(text: str) -> list[str]:
    """Split on ``;`` outside quotes and comments (enough for the README's SQL)."""
    parts, current, quoted, i = [], [], False, 0
    while i < len(text):
        c = text[i]
        if not quoted and text.startswith("--", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            current.append(text[i:end])
            i = end
            continue
        current.append(c)
        if c == "'":
            quoted = not quoted
        elif c == ";" and not quoted:
            parts.append("".join(current))
            current = []
        i += 1
    parts.append("".join(current))
    return parts


def _only_comments(statement: str) -> bool:
    return all(not x.strip() or x.strip().startswith("--") for x in statement.splitlines())
