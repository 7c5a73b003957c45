"""Small HTML helpers for generated pages. All catalog text goes through :func:`esc`."""

from __future__ import annotations

import html
import posixpath

SECTIONS = {"attack": "attacks", "paper": "papers", "domain": "domains", "defence": "defences", "dataset": "datasets"}


def esc(value: object) -> str:
    """Escape text (and attribute values) for HTML: catalog text is untrusted."""
    return html.escape(str(value), quote=True)


def page_uri(kind: str, entry_id: str) -> str:
    """Source path (relative to docs/) of an entry's generated page."""
    return f"{SECTIONS[kind]}/{entry_id}.md"


def href(from_uri: str, to_uri: str, anchor: str = "") -> str:
    """Relative link between two generated pages, as built with use_directory_urls off."""
    if from_uri == to_uri and anchor:
        return esc(f"#{anchor}")
    target = to_uri[:-3] + ".html" if to_uri.endswith(".md") else to_uri
    rel = posixpath.relpath(target, posixpath.dirname(from_uri) or ".")
    return esc(rel + (f"#{anchor}" if anchor else ""))


def link(from_uri: str, to_uri: str, text: str, cls: str = "") -> str:
    klass = f' class="{esc(cls)}"' if cls else ""
    return f'<a href="{href(from_uri, to_uri)}"{klass}>{esc(text)}</a>'


def external(url: str, text: str) -> str:
    if not url.startswith(("https://", "http://")):
        return esc(text)
    return f'<a href="{esc(url)}" rel="noopener">{esc(text)}</a>'


def dl(rows: list[tuple[str, str]]) -> str:
    """A definition list; values are already HTML."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows if v)
    return f'<dl class="mf-facts">{items}</dl>'


def ul(items: list[str], empty: str = "none") -> str:
    if not items:
        return f'<p class="mf-none">{esc(empty)}</p>'
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def block(*parts: str) -> str:
    """Wrap HTML in one raw block that Markdown leaves alone (no blank lines inside)."""
    body = "\n".join(p.strip() for p in parts if p and p.strip())
    body = "\n".join(line for line in body.splitlines() if line.strip())
    return f'<div class="mf-page" markdown="0">\n{body}\n</div>\n'
