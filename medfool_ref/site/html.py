"""Links between generated pages, and the raw block that wraps a page's HTML for Markdown."""

from __future__ import annotations

import html
import json
import posixpath
from dataclasses import dataclass

SECTIONS = {"attack": "attacks", "paper": "papers", "domain": "domains", "defence": "defences", "dataset": "datasets"}


@dataclass(frozen=True)
class Link:
    """A link for the ``link`` macro: plain strings, escaped when rendered."""

    href: str
    text: str
    title: str = ""


def esc(value: object) -> str:
    """Escape text for HTML outside templates (front matter and nav titles, which MkDocs renders unescaped)."""
    return html.escape(str(value), quote=True)


def page_uri(kind: str, entry_id: str) -> str:
    """Source path (relative to docs/) of an entry's generated page."""
    return f"{SECTIONS[kind]}/{entry_id}.md"


def href(from_uri: str, to_uri: str, anchor: str = "") -> str:
    """Relative link between two generated pages, as built with use_directory_urls off (not escaped)."""
    if from_uri == to_uri and anchor:
        return f"#{anchor}"
    target = to_uri[:-3] + ".html" if to_uri.endswith(".md") else to_uri
    rel = posixpath.relpath(target, posixpath.dirname(from_uri) or ".")
    return rel + (f"#{anchor}" if anchor else "")


def block(body: str) -> str:
    """Wrap rendered HTML in one raw block that Markdown leaves alone (no blank lines inside)."""
    lines = "\n".join(line for line in body.strip().splitlines() if line.strip())
    return f'<div class="mf-page" markdown="0">\n{lines}\n</div>\n'


@dataclass
class Page:
    uri: str  # path under docs/, e.g. attacks/deepfool.md
    title: str
    body: str
    tags: tuple[str, ...] = ()

    def markdown(self) -> str:
        front = [f"title: {json.dumps(esc(self.title))}"]  # MkDocs renders titles unescaped
        if self.tags:
            front.append("tags:")
            front += [f"  - {json.dumps(t)}" for t in self.tags]
        return "---\n" + "\n".join(front) + "\n---\n\n" + self.body
