"""Figure 2 of the survey drawn as SVG from the catalog: two routes into a classifier pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..catalog.derive import route_of
from ..catalog.models import FAMILY_LABELS, Family, Route
from .html import Link, href, page_uri
from .render import render

if TYPE_CHECKING:
    from ..catalog.loader import Catalog

BOX_W, BOX_H, GAP, TOP = 250, 24, 6, 150
# route -> (column x, where its arrow points, label)
COLUMNS = {
    Route.TRAINING_TAMPERING: (40, (130, 54), "Route 2: training-process tampering"),
    Route.INPUT_ALTERATION: (470, (630, 114), "Route 1: input alteration"),
}


def layout(c: Catalog, here: str) -> dict[str, Any]:
    """Layout of the figure for ``routes.svg``: per route, its families and their attack boxes."""
    groups: dict[Route, list[tuple[str, list]]] = {r: [] for r in Route}
    for fam in Family:
        members = [a for a in c.attacks.values() if a.family is fam]
        if members:
            groups[route_of(members[0])].append((FAMILY_LABELS[fam], members))
    columns = []
    for route, (x, anchor, label) in COLUMNS.items():
        y, families = TOP, []
        for fam_label, members in groups[route]:
            boxes = []
            for i, a in enumerate(members):
                boxes.append({"y": y + 24 + i * (BOX_H + GAP), "link": Link(href(here, page_uri("attack", a.id)), _short(a.name))})
            families.append({"label": fam_label, "y": y, "boxes": boxes})
            y += 28 + len(members) * (BOX_H + GAP)
        columns.append({"x": x, "anchor": anchor, "label": label, "families": families, "bottom": y})
    height = max(col["bottom"] for col in columns) + 30
    return {"height": height, "top": TOP, "box_w": BOX_W, "box_h": BOX_H, "columns": columns}


def routes_svg(c: Catalog, here: str) -> str:
    """Pipeline boxes (training data -> training -> model <- input image) with attacks on each route."""
    return render("routes.svg", fig=layout(c, here))


def _short(name: str, limit: int = 38) -> str:
    if len(name) <= limit:
        return name
    head = name.split(" (")[0]
    return head if len(head) <= limit else head[: limit - 1] + "…"
