"""The package's layout and import rules: the data flows one way, and each wing reaches only what it may.

The import graph is read from the source (every ``import``, lazy and type-only ones included),
so a rule is broken as soon as the code names a forbidden module, whether or not a test runs it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "medfool_ref"
WINGS = {"attacks", "campaign", "catalog", "cli", "defences", "inputs", "reports", "site", "targets", "training"}
TORCH_SIDE = ("torch", "numpy", "PIL", "safetensors")  # what a bare GPU box has


def _module(path: Path, pkg: Path) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _nodes(tree: ast.AST, runtime: bool) -> list[ast.AST]:
    """Every node, or (runtime) every node outside ``if TYPE_CHECKING:`` blocks."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if runtime and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo += child.orelse
                continue
            todo.append(child)
    return out


def _graph(pkg: Path = PKG, runtime: bool = False) -> dict[str, set[str]]:
    """module -> the modules it imports (medfool_ref modules by full name, others by top-level name); ``runtime``
    leaves out the imports made for type checking only."""
    modules = {_module(p, pkg): p for p in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in _nodes(ast.parse(path.read_text(encoding="utf-8")), runtime):
            if isinstance(node, ast.Import):
                deps |= {a.name if a.name.startswith("medfool_ref") else a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if not mod.startswith("medfool_ref"):
                    deps.add(mod.split(".")[0])
                    continue
                for a in node.names:  # `from . import x` may name a submodule
                    deps.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod)
        graph[name] = deps
    return graph


GRAPH = _graph()
RUNTIME = _graph(runtime=True)


def _reach(start: str, graph: dict[str, set[str]] = GRAPH) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _in(wing: str) -> list[str]:
    return sorted(m for m in GRAPH if m == f"medfool_ref.{wing}" or m.startswith(f"medfool_ref.{wing}."))


def _third_party(mods: set[str]) -> set[str]:
    return {m for m in mods if not m.startswith("medfool_ref") and m not in sys.stdlib_module_names and m != "__future__"}


def test_the_top_level_holds_only_the_face_and_the_registry() -> None:
    assert sorted(p.name for p in PKG.glob("*.py")) == ["__init__.py", "registry.py"]
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == WINGS | {"data"}
    assert not (PKG / "data" / "__init__.py").exists()  # shipped files, not a module


@pytest.mark.parametrize("module", _in("attacks"))
def test_attack_code_reaches_torch_numpy_and_pillow_only(module: str) -> None:
    reached = _reach(module)
    assert _third_party(reached) <= set(TORCH_SIDE), _third_party(reached)
    wings = {m.split(".")[1] for m in reached if m.startswith("medfool_ref.")}
    assert wings <= {"attacks", "inputs", "targets", "training"}, wings


@pytest.mark.parametrize("module", _in("defences"))
def test_defence_code_reaches_torch_numpy_and_pillow_only(module: str) -> None:
    reached = _reach(module)
    assert _third_party(reached) <= set(TORCH_SIDE), _third_party(reached)
    wings = {m.split(".")[1] for m in reached if m.startswith("medfool_ref.")}
    assert wings <= {"attacks", "defences", "inputs", "targets", "training"}, wings


@pytest.mark.parametrize("module", _in("catalog"))
def test_the_catalog_imports_no_renderer_command_line_or_attack_code(module: str) -> None:
    reached = _reach(module)
    assert not _third_party(reached) & {"jinja2", "mkdocs", "matplotlib", "torch", "tqdm"}
    assert not {m for m in reached if m.startswith(("medfool_ref.cli", "medfool_ref.site", "medfool_ref.attacks",
                                                     "medfool_ref.campaign", "medfool_ref.reports"))}


@pytest.mark.parametrize("module", _in("site"))
def test_the_site_reads_the_catalog_and_files_never_attack_code(module: str) -> None:
    reached = _reach(module)
    assert "torch" not in _third_party(reached)
    assert not {m for m in reached if m.startswith(("medfool_ref.attacks", "medfool_ref.campaign", "medfool_ref.cli",
                                                     "medfool_ref.targets", "medfool_ref.training"))}


DRIVER_ONLY = {"medfool_ref.targets.config"}  # validates a user's model.yaml with pydantic on the driver; workers get data


def test_the_campaign_core_and_its_inputs_never_reach_the_catalog_stack() -> None:
    for wing in ("campaign", "targets", "inputs", "training"):
        for module in set(_in(wing)) - DRIVER_ONLY:
            reached = _reach(module, RUNTIME)
            assert not _third_party(reached) & {"pydantic", "pybtex", "yaml", "jinja2", "mkdocs"}, module
            assert not {m for m in reached if m.startswith(("medfool_ref.catalog", "medfool_ref.site", "medfool_ref.cli"))}, module


def test_there_is_no_import_cycle() -> None:
    ours = {m: {d for d in deps if d in GRAPH} for m, deps in GRAPH.items()}
    for start in ours:
        todo, seen = list(ours[start]), set()
        while todo:
            m = todo.pop()
            assert m != start or start.endswith("__init__"), f"{start} imports itself through {sorted(seen)}"
            if m not in seen:
                seen.add(m)
                todo += ours[m]


def test_a_bare_gpu_box_can_run_the_core() -> None:
    """Importing the attacks, the campaign core, targets, inputs and training loads no catalog-side package."""
    code = ("import sys, medfool_ref.attacks, medfool_ref.campaign.execute, medfool_ref.campaign.run, medfool_ref.campaign.showcase, "
            "medfool_ref.targets.target, medfool_ref.inputs.samples, medfool_ref.training.loop, medfool_ref.registry;"
            "bad=[m for m in ('pydantic','pybtex','mkdocs','yaml','jinja2','medfool_ref.catalog','medfool_ref.site') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_graph_reader_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rules above can fail: attack code that reaches the catalog (and through it pydantic) is seen."""
    pkg = tmp_path / "medfool_ref"
    for rel, src in {"__init__.py": "", "attacks/__init__.py": "", "attacks/evil.py": "from ..catalog import load_catalog\n",
                     "catalog/__init__.py": "from .loader import load_catalog\n", "catalog/loader.py": "import pydantic\n"}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(src)
    reached = _reach("medfool_ref.attacks.evil", _graph(pkg))
    assert {"medfool_ref.catalog", "medfool_ref.catalog.loader", "pydantic"} <= reached
    assert _third_party(reached) == {"pydantic"}
