"""Figure 2 of the survey drawn as SVG from the catalog: two routes into a classifier pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..catalog.derive import route_of
from ..catalog.models import FAMILY_LABELS, Family, Route
from .html import esc, href, page_uri

if TYPE_CHECKING:
    from ..catalog.loader import Catalog

BOX_W, BOX_H, GAP = 250, 24, 6


def routes_svg(c: Catalog, here: str) -> str:
    """Pipeline boxes (training data -> training -> model <- input image) with attacks on each route."""
    columns = {Route.TRAINING_TAMPERING: 40, Route.INPUT_ALTERATION: 470}
    groups: dict[Route, list[tuple[str, list]]] = {r: [] for r in Route}
    for fam in Family:
        members = [a for a in c.attacks.values() if a.family is fam]
        if members:
            groups[route_of(members[0])].append((FAMILY_LABELS[fam], members))
    heights = {r: sum(28 + len(m) * (BOX_H + GAP) for _, m in g) for r, g in groups.items()}
    top = 150
    height = top + max(heights.values()) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 760 {height}" class="mf-svg" role="img" '
           'aria-label="Attack routes: training-process tampering and input alteration">',
           '<defs><marker id="mf-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
           '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>']

    def box(x: int, y: int, w: int, text: str, cls: str) -> None:
        out.append(f'<rect x="{x}" y="{y}" width="{w}" height="34" rx="6" class="{cls}"/>'
                   f'<text x="{x + w // 2}" y="{y + 22}" text-anchor="middle" class="mf-svg-label">{esc(text)}</text>')

    box(40, 20, 180, "Training data", "mf-svg-stage")
    box(290, 20, 180, "Training", "mf-svg-stage")
    box(290, 80, 180, "Deployed model", "mf-svg-model")
    box(540, 80, 180, "Input image (tile)", "mf-svg-stage")
    out.append('<line x1="220" y1="37" x2="288" y2="37" class="mf-svg-flow" marker-end="url(#mf-arrow)"/>')
    out.append('<line x1="380" y1="54" x2="380" y2="78" class="mf-svg-flow" marker-end="url(#mf-arrow)"/>')
    out.append('<line x1="540" y1="97" x2="472" y2="97" class="mf-svg-flow" marker-end="url(#mf-arrow)"/>')
    for route, x in columns.items():
        anchor_x = 130 if route is Route.TRAINING_TAMPERING else 630
        anchor_y = 54 if route is Route.TRAINING_TAMPERING else 114
        out.append(f'<line x1="{x + BOX_W // 2}" y1="{top - 6}" x2="{anchor_x}" y2="{anchor_y + 2}" class="mf-svg-attack" marker-end="url(#mf-arrow)"/>')
        route_label = "Route 2: training-process tampering" if route is Route.TRAINING_TAMPERING else "Route 1: input alteration"
        out.append(f'<text x="{x}" y="{top - 14}" class="mf-svg-route">{esc(route_label)}</text>')
        y = top
        for label, members in groups[route]:
            out.append(f'<text x="{x}" y="{y + 16}" class="mf-svg-family">{esc(label)}</text>')
            y += 24
            for a in members:
                link = href(here, page_uri("attack", a.id))
                out.append(f'<a href="{link}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="4" class="mf-svg-attackbox"/>'
                           f'<text x="{x + 8}" y="{y + 16}" class="mf-svg-text">{esc(_short(a.name))}</text></a>')
                y += BOX_H + GAP
            y += 4
    out.append("</svg>")
    return "".join(out)


def _short(name: str, limit: int = 38) -> str:
    if len(name) <= limit:
        return name
    head = name.split(" (")[0]
    return head if len(head) <= limit else head[: limit - 1] + "…"
