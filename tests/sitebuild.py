"""Helpers for the site tests: build a project copy with mkdocs, and read the built HTML."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from medfool_ref.catalog import default_root

ROOT = default_root()
PROJECT_PARTS = ("catalog", "bib", "docs", "mkdocs.yml", "medfool_ref/data", "benchmarks/results")


def copy_project(dest: Path) -> Path:
    """Copy what a site build reads (catalog, bib, docs, mkdocs.yml, sample data) into ``dest``."""
    for part in PROJECT_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part)
        else:
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / part)
    return dest


def build(project: Path, out: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONSAFEPATH: like the `mkdocs` script, do not put the cwd on sys.path, where the copied
    # medfool_ref/data would shadow the installed package as an empty namespace package
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(project / "mkdocs.yml"), "-d", str(out)],
                          capture_output=True, text=True, cwd=project, env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONSAFEPATH": "1"})


class Page(HTMLParser):
    """Collects links, resources, ids, tables (by id) and <pre><code> blocks of one HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.resources: list[str] = []
        self.ids: set[str] = set()
        self.tables: dict[str, list[list[list[tuple[str, str]]]]] = {}
        self.code_blocks: list[str] = []
        self.scripts: list[str] = []
        self._table: str | None = None
        self._cell: list[tuple[str, str]] | None = None
        self._href: str | None = None
        self._text: list[str] = []
        self._in_code = 0
        self._code: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
            self._href, self._text = a["href"], []
        if tag in ("script", "img", "iframe", "source") and a.get("src"):
            self.resources.append(a["src"])
        if tag == "link" and a.get("href"):
            self.resources.append(a["href"])
        if tag == "table" and "id" in a:
            self._table = a["id"]
            self.tables[self._table] = []
        if tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        if tag == "td" and self._table is not None:
            self._cell = []
        if tag == "code" and self._in_code == 0:
            self._code = []
        if tag == "code":
            self._in_code += 1
        if tag == "script":
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            if self._cell is not None:
                self._cell.append((self._href, "".join(self._text).strip()))
            self._href = None
        if tag == "td" and self._table is not None and self._cell is not None:
            self.tables[self._table][-1].append(self._cell)
            self._cell = None
        if tag == "table":
            self._table = None
        if tag == "code" and self._in_code:
            self._in_code -= 1
            if self._in_code == 0:
                self.code_blocks.append("".join(self._code))
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)
        if self._in_code:
            self._code.append(data)
        if self._in_script:
            self.scripts.append(data)


def read(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))
