"""Layers (STYLE.md): every library module imports only floors below its own; nothing in the library imports the
recipes, commands, CLI or benchmarks; recipes and benchmarks do not reach into commands (argument parsing).

The imports are read from the source (every `import` anywhere in a module, lazy ones inside functions included),
so the test sees what a reader sees and runs in milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clipforge

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "clipforge"

# Floor of each unit (a sub-package or a top-level module of clipforge); a module may import only units on
# lower floors, and anything of its own unit.
FLOORS = {
    **dict.fromkeys(
        ["extras", "fileio", "device", "overrides", "decode", "local_weights"], 0
    ),  # base helpers (decode: PIL only; local_weights: files that installed packages ship)
    **dict.fromkeys(["figures", "results"], 0.5),  # PNG / JSON + Markdown outputs
    "models": 1,  # the math
    "flops": 1.5,  # GFLOPs of a model config
    **dict.fromkeys(["checkpoints", "tokenizer", "transforms"], 2),  # formats
    **dict.fromkeys(["factory", "encode"], 2.5),  # front doors over the formats
    "clipforge": 2.75,  # the package's lazy public names (clipforge.load, clipforge.tokenize, ...)
    **dict.fromkeys(["data", "zeroshot"], 3),  # one data stack; zero-shot heads
    **dict.fromkeys(["apps", "curate", "evaluate", "train"], 4),  # jobs
    **dict.fromkeys(["commands", "cli"], 5),  # argv -> typed values -> one library call
    "recipes": 6,  # the demo and the experiments: use everything, nothing in the library imports them
}
COMMANDS = {"commands", "cli"}


def _unit_of_module(path: Path, package: Path) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return "clipforge" if parts == ("__init__",) else parts[0]


def _module_name(path: Path, package: Path) -> str:
    """Dotted name, `__init__` kept: one level up from it is always the containing package."""
    return ".".join(("clipforge", *path.relative_to(package).with_suffix("").parts))


def _root_attribute_unit(name: str) -> str | None:
    """`from clipforge import X`: the unit that lazily provides X (tokenize lives in the tokenizer)."""
    if name in ("tokenize", "get_tokenizer"):
        return "tokenizer"
    exported = getattr(clipforge, "_EXPORTS", {}).get(name)
    return exported.split(".")[1] if exported else None


def _target_units(node: ast.AST, importer: str) -> list[str]:
    """Units of clipforge (or "benchmarks") that one import statement reaches."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level:  # relative: resolve against the importing module's package
            base = importer.split(".")[: -node.level]
            module = ".".join([*base, module] if module else base)
        if module == "clipforge":
            return [u for u in (_root_attribute_unit(a.name) for a in node.names) if u]
        names = [module]
    else:
        return []
    units = []
    for name in names:
        parts = name.split(".")
        if parts[0] == "benchmarks":
            units.append("benchmarks")
        elif parts[0] == "clipforge":
            units.append(parts[1] if len(parts) > 1 else "clipforge")
    return units


def _imports(path: Path, importer: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(node.lineno, unit) for node in ast.walk(tree) for unit in _target_units(node, importer)]


def library_violations(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        unit, where = _unit_of_module(path, package), path.relative_to(package.parent)
        if unit not in FLOORS:
            found.append(f"{where}: unit {unit!r} has no floor in tests/test_layers.py")
            continue
        for line, target in _imports(path, _module_name(path, package)):
            if target == unit or (unit == "commands" and target == "recipes"):
                continue  # commands call into the recipes (`clipforge demo`, `clipforge experiment`)
            floor = FLOORS.get(target)
            if floor is None or floor >= FLOORS[unit]:
                found.append(f"{where}:{line}: {unit} (floor {FLOORS[unit]}) imports {target} "
                             f"(floor {floor if floor is not None else 'none: not a library unit'})")  # fmt: skip
    return found


def outside_violations() -> list[tuple[str, str, int]]:
    """(file, unit, line): recipes and benchmarks importing commands/cli."""
    paths = sorted((REPO / "benchmarks").rglob("*.py")) + sorted((PACKAGE / "recipes").rglob("*.py"))
    found = []
    for path in paths:
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for line, target in _imports(path, name):
            if target in COMMANDS:
                found.append((str(path.relative_to(REPO)), target, line))
    return found


def test_library_imports_only_lower_floors():
    assert library_violations() == []


def test_recipes_and_benchmarks_do_not_import_commands():
    """Reusable logic lives in the library; commands only parse argv (benchmarks/fewshot_curve.py once did)."""
    assert [f"{f}:{line}: imports clipforge.{u}" for f, u, line in outside_violations()] == []


def test_the_checker_finds_upward_lazy_and_unknown_imports(tmp_path):
    """A lazy import inside a function, `from clipforge import tokenize` and a relative import are all seen."""
    package = tmp_path / "clipforge"
    (package / "models").mkdir(parents=True)
    (package / "data").mkdir()
    (package / "models" / "bad.py").write_text("def f():\n    from clipforge.train import fit\n")
    (package / "models" / "ok.py").write_text(
        "from . import bad\nfrom clipforge.fileio import atomic_write\n"
    )
    (package / "data" / "ok.py").write_text("from clipforge import tokenize\nimport clipforge.models.ok\n")
    (package / "data" / "bad.py").write_text("from ..recipes import demo\nimport benchmarks.run\n")
    (package / "newunit.py").write_text("")
    assert library_violations(package) == [
        "clipforge/data/bad.py:1: data (floor 3) imports recipes (floor 6)",
        "clipforge/data/bad.py:2: data (floor 3) imports benchmarks (floor none: not a library unit)",
        "clipforge/models/bad.py:2: models (floor 1) imports train (floor 4)",
        "clipforge/newunit.py: unit 'newunit' has no floor in tests/test_layers.py",
    ]
