"""The one Jinja2 environment that renders every generated page, autoescaping all of them.

Catalog text is untrusted, so it reaches the HTML only as template variables, which are
escaped; templates never mark a value safe. HTML built from several templates is composed
with macros (``macros.html``) and includes, never by joining strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent / "templates"

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(["html", "svg"], default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(name: str, **context: Any) -> str:
    """Render one template of ``templates/``."""
    return env.get_template(name).render(**context)
