"""The import rules of docs/architecture.md's module map, checked on the source with `ast`.

The folder tree is the architecture: `core` is shared by everyone, each process (`reconciler`, `gateway`, `sync`)
is reached only through `cli.py`, and the development harness is never imported by the product. A rule that is
only written down drifts; this test fails the first commit that breaks one. `cli.py` names every command's module
as a *string* in its lazy command table (so `qbo-operator sync` starts without loading kopf or the gateway): those
strings are not imports, by design, and are checked separately below."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from qbo_operator import cli

PACKAGE = "qbo_operator"
ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "operator" / PACKAGE
LAYERS = ("core", "reconciler", "gateway", "sync", "harness")
TOP_LEVEL = {"__init__", "__main__", "cli"}  # everything else lives in a layer's folder
PRODUCT = ("top", "core", "reconciler", "gateway", "sync")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer a `qbo_operator…` module belongs to: a folder in LAYERS, "top" for the package itself and
    `cli`/`__main__`; None for modules outside the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return "top"


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module `source` imports, anywhere in the file (functions and TYPE_CHECKING blocks too), with
    relative imports resolved, `from a import b` counted as both `a` and `a.b` (b may be a submodule), and
    `importlib.import_module("literal")` counted as an import."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str

    @property
    def importer_layer(self) -> str | None:
        return layer_of(self.importer)

    @property
    def imported_layer(self) -> str | None:
        return layer_of(self.imported)


def package_edges() -> list[Edge]:
    edges = []
    for path in sorted(SOURCE.rglob("*.py")):
        module = module_name(path)
        for target in imported_modules(path.read_text(), module, is_package=path.name == "__init__.py"):
            edges.append(Edge(module, target))
    return edges


@dataclass(frozen=True)
class Rule:
    why: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]

    def broken_by(self, edges: list[Edge]) -> list[str]:
        return sorted(
            f"{e.importer} imports {e.imported}"
            for e in edges
            if e.importer_layer in self.importers and e.imported_layer in self.forbidden
        )


RULES = [
    Rule("the product never imports the development harness", PRODUCT, ("harness",)),
    Rule("core is shared by everyone, so it imports no process and no harness", ("core",), LAYERS[1:]),
    Rule("the reconciler never imports the gateway or the sync", ("reconciler",), ("gateway", "sync")),
    Rule("the gateway never imports the reconciler or the sync", ("gateway",), ("reconciler", "sync")),
    Rule("the sync never imports the reconciler or the gateway", ("sync",), ("reconciler", "gateway")),
    Rule(
        "the harness starts the operator and the gateway as processes, never imports them",
        ("harness",),
        ("reconciler", "gateway"),
    ),
    Rule("cli reaches the processes only through its lazy command table", ("top",), LAYERS[1:]),
]


@pytest.mark.parametrize("rule", RULES, ids=[r.why for r in RULES])
def test_import_rule(rule: Rule) -> None:
    assert rule.broken_by(package_edges()) == [], rule.why


def test_every_module_lives_in_a_layer_folder_or_is_top_level() -> None:
    strays = [
        module_name(p)
        for p in SOURCE.rglob("*.py")
        if (p.parent == SOURCE and p.stem not in TOP_LEVEL)
        or (p.parent != SOURCE and p.relative_to(SOURCE).parts[0] not in LAYERS)
    ]
    assert strays == [], "add the folder to LAYERS and to docs/architecture.md's module map, or move the module"


@pytest.mark.parametrize(
    ("command", "layer"),
    [("run", "reconciler"), ("gateway", "gateway"), ("sync", "sync"), ("demo", "harness"), ("sandbox", "harness")],
)
def test_the_lazy_command_table_names_each_process_in_its_own_folder(command: str, layer: str) -> None:
    """The only place the product names the harness: as a string, imported when `demo` or `sandbox` is chosen."""
    assert layer_of(cli.COMMANDS[command][0]) == layer


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import qbo_operator.harness.demo", "qbo_operator.sync.run", {"qbo_operator.harness.demo"}),
        (
            "from qbo_operator.harness import controlplane",
            "qbo_operator.sync.run",
            {"qbo_operator.harness", "qbo_operator.harness.controlplane"},
        ),
        ("from ..harness import demo", "qbo_operator.sync.run", {"qbo_operator.harness", "qbo_operator.harness.demo"}),
        ("from . import mapping", "qbo_operator.sync.run", {"qbo_operator.sync", "qbo_operator.sync.mapping"}),
        ("def f():\n    import qbo_operator.reconciler.handlers", "m", {"qbo_operator.reconciler.handlers"}),
        ("importlib.import_module('qbo_operator.harness.demo')", "m", {"qbo_operator.harness.demo"}),
        ("import_module(name)", "m", set()),  # a computed name (cli's command table) is not an import
        ("COMMANDS = {'demo': ('qbo_operator.harness.demo', '')}", "m", set()),
    ],
)
def test_imports_are_found_wherever_they_are_written(source: str, module: str, expected: set[str]) -> None:
    assert imported_modules(source, module) == expected


def test_a_broken_rule_is_reported() -> None:
    edges = [Edge("qbo_operator.gateway.app", "qbo_operator.reconciler.handlers")]
    assert RULES[3].broken_by(edges) == ["qbo_operator.gateway.app imports qbo_operator.reconciler.handlers"]
    assert RULES[0].broken_by(edges) == []


def canonical(requirement: str) -> str:
    """`PyYAML>=6.0` -> `pyyaml`, `kubernetes_asyncio` -> `kubernetes-asyncio` (PEP 503 names)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]).lower()


def test_what_only_the_harness_imports_is_the_harness_extra_not_a_runtime_dependency() -> None:
    """The image installs requirements/runtime.lock, resolved from [project].dependencies: a package the product
    never imports does not belong there, and one it does import must not hide in the extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = {canonical(d) for d in project["optional-dependencies"]["harness"]}
    runtime = {canonical(d) for d in project["dependencies"]}
    dists = {name: {canonical(d) for d in ds} for name, ds in metadata.packages_distributions().items()}
    assert extra <= {d for ds in dists.values() for d in ds}, "every extra is installed here, so this test sees it"
    imported_by: dict[str, set[str]] = {}
    for edge in package_edges():
        for dist in dists.get(edge.imported.split(".")[0], set()):
            imported_by.setdefault(dist, set()).add("harness" if edge.importer_layer == "harness" else "product")
    assert {d for d in extra if "product" in imported_by.get(d, set())} == set(), "the product imports these"
    assert {d for d in runtime if imported_by.get(d) == {"harness"}} == set(), "only the harness imports these"


def test_a_harness_command_without_its_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # what `import yaml` meets when PyYAML is not installed
    monkeypatch.delitem(sys.modules, "qbo_operator.harness.demo", raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo"])
    assert str(exc.value) == (
        "qbo-operator demo: needs the Python package 'yaml', part of the 'harness' extra:"
        " pip install 'qbo-operator[harness]'"
    )


# --- the repository stands alone -------------------------------------------------------------------------------------

TEXT_ROOTS = ("operator", "tests", "bench", "charts", "crds", "docs", "examples", "tools", ".ci")
TEXT_FILES = ("README.md", "Makefile", "Dockerfile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".json", ".txt", ".sh", ".lua", ".tpl", ".html", ".go", ""}
# The contract and the facts once lived beside the repository, under these names; docs/ holds them now.
OUTSIDE = re.compile(r"\b(?:DESIGN|QBO|GREENCHECK|CONTROL-PLANE|SECURITY-REVIEW)\.md\b|\.\./shared\b|\bDESIGN §")
SECTION_REFERENCE = re.compile(r"docs/([a-z0-9-]+\.md) §(\d+(?:\.\d+)?)")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def text_files() -> list[Path]:
    files = [ROOT / name for name in TEXT_FILES]
    for top in TEXT_ROOTS:
        files += [p for p in (ROOT / top).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    return [p for p in files if p.exists() and "__pycache__" not in p.parts and p != Path(__file__)]


def test_nothing_refers_to_a_file_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}"
        for path in text_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert found == [], "point at docs/design.md, docs/qbo.md, docs/greencheck.md or docs/control-plane.md instead"


def headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")]


def test_every_docs_section_named_in_the_code_exists() -> None:
    """`docs/qbo.md §5.4` in a docstring must land on a heading `5.4 …` (or `5. …`) of that page."""
    missing = []
    for path in text_files():
        for page, section in set(SECTION_REFERENCE.findall(path.read_text(errors="replace"))):
            doc = ROOT / "docs" / page
            if not doc.exists() or not any(re.match(rf"{re.escape(section)}\.?\s", h) for h in headings(doc)):
                missing.append(f"{path.relative_to(ROOT)}: docs/{page} §{section}")
    assert sorted(missing) == []


def test_every_relative_link_in_the_docs_resolves() -> None:
    pages = [ROOT / "README.md", ROOT / "charts" / "qbo-operator" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in pages
        for target in MARKDOWN_LINK.findall(page.read_text())
        if "://" not in target
        and not target.startswith(("#", "mailto:"))
        and not (page.parent / target.split("#")[0]).exists()
    ]
    assert broken == []
