"""Reading ``bib/*.bib`` with pybtex, collecting every problem instead of stopping at the first."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pybtex.errors
from pybtex.database import BibliographyData, Entry
from pybtex.database.input import bibtex as bibtex_input

from .diagnostics import Diagnostic

_ENTRY_START = re.compile(r"^[ \t]*@[ \t]*([A-Za-z]+)[ \t]*[{(][ \t]*([^,\s]+)[ \t]*,", re.MULTILINE)
_NON_ENTRIES = {"comment", "preamble", "string"}
MAX_BIB_BYTES = 2 * 1024 * 1024


@dataclass
class Bibliography:
    data: BibliographyData = field(default_factory=BibliographyData)
    files: dict[str, str] = field(default_factory=dict)  # key -> relative path of its .bib
    lines: dict[str, int] = field(default_factory=dict)  # key -> line of its '@'

    def __contains__(self, key: str) -> bool:
        return key in self.data.entries

    def entry(self, key: str) -> Entry:
        return self.data.entries[key]


def _entry_lines(text: str) -> list[tuple[str, int]]:
    """(key, line) of every entry; lines are counted incrementally, so a large file costs linear time."""
    out = []
    line, pos = 1, 0
    for m in _ENTRY_START.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        if m.group(1).lower() in _NON_ENTRIES:
            continue
        out.append((m.group(2), line))
    return out


def load_bibliography(root: Path, problems: list[Diagnostic]) -> Bibliography:
    """Parse every ``bib/*.bib`` under ``root``; report problems into ``problems``."""
    bib = Bibliography()
    bib_dir = root / "bib"
    paths = sorted(bib_dir.glob("*.bib")) if bib_dir.is_dir() else []
    if not paths:
        problems.append(Diagnostic(str(bib_dir.relative_to(root)), None, "", "no .bib files found"))
        return bib
    for path in paths:
        rel = path.relative_to(root).as_posix()
        raw = path.read_bytes()
        if len(raw) > MAX_BIB_BYTES:
            problems.append(Diagnostic(rel, None, "", f"file is {len(raw)} bytes; the limit is {MAX_BIB_BYTES}"))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            problems.append(Diagnostic(rel, line, "", f"not valid UTF-8 ({exc.reason})"))
            continue
        seen_here: dict[str, int] = {}
        for key, line in _entry_lines(text):
            if key in seen_here:
                problems.append(Diagnostic(rel, line, key, f"duplicate BibTeX key {key!r} (first on line {seen_here[key]})"))
            elif key in bib.files:
                problems.append(Diagnostic(rel, line, key, f"duplicate BibTeX key {key!r} (also in {bib.files[key]}:{bib.lines[key]})"))
            else:
                seen_here[key] = line
        parsed = _parse(text, rel, problems)
        for key, entry in parsed.entries.items():
            if key in bib.files:
                continue
            bib.data.entries[key] = entry
            bib.files[key] = rel
            bib.lines[key] = seen_here.get(key, 1)
    return bib


def _parse(text: str, rel: str, problems: list[Diagnostic]) -> BibliographyData:
    with pybtex.errors.capture() as collected:
        try:
            data = bibtex_input.Parser().parse_string(text)
        except Exception as exc:  # pybtex raises its own error types; report them all the same way
            collected.append(exc)
            data = BibliographyData()
    for exc in collected:
        message = str(exc)
        if "repeated bibliography entry" in message:
            continue  # reported above with both line numbers
        problems.append(Diagnostic(rel, getattr(exc, "lineno", None), "", f"BibTeX: {message}"))
    return data
