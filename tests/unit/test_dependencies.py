"""The package declares exactly what it imports.

Every third-party module that `src/moorage` imports (anywhere: top level, inside functions, under
TYPE_CHECKING) must come from a distribution named in `[project].dependencies` of pyproject.toml,
and every declared distribution must be imported somewhere, except the drivers that are loaded by
name at run time (they must be declared, and named in the source, but need not be imported).
A missing declaration is what made `pip install . && moorage serve` die on a fresh machine.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections import defaultdict
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "src" / "moorage"

# Loaded by name, never imported: SQLAlchemy's `sqlite+aiosqlite` / `postgresql+asyncpg` URLs and
# granian's `Loops.uvloop`.
RUNTIME_DRIVERS = frozenset({"aiosqlite", "asyncpg", "uvloop"})


def imported_modules(root: Path) -> dict[str, set[str]]:
    """Top-level module name -> the files (relative to `root`) that import it; absolute imports only."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        where = str(path.relative_to(root))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found[alias.name.partition(".")[0]].add(where)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found[node.module.partition(".")[0]].add(where)
    return dict(found)


def third_party(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        name: files
        for name, files in modules.items()
        if name not in sys.stdlib_module_names and name != "moorage" and name != "__future__"
    }


def declared_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> set[str]:
    """The canonical distribution names of `[project].dependencies`."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}


@cache
def module_distributions() -> dict[str, set[str]]:
    """Installed top-level module -> canonical names of the distributions that provide it."""
    return {module: {canonicalize_name(d) for d in dists} for module, dists in packages_distributions().items()}


def distribution_modules() -> dict[str, set[str]]:
    inverse: dict[str, set[str]] = defaultdict(set)
    for module, dists in module_distributions().items():
        for dist in dists:
            inverse[dist].add(module)
    return dict(inverse)


def undeclared_imports(modules: dict[str, set[str]], declared: set[str]) -> list[str]:
    """One line per third-party import that no declared distribution provides."""
    problems = []
    providers = module_distributions()
    for module, files in sorted(third_party(modules).items()):
        dists = providers.get(module)
        where = ", ".join(sorted(files))
        if not dists:
            problems.append(f"{module} (imported by {where}) is not provided by any installed distribution")
        elif not dists & declared:
            problems.append(
                f"{module} (imported by {where}) comes from {', '.join(sorted(dists))}, "
                "which pyproject.toml [project].dependencies does not declare"
            )
    return problems


def unused_declarations(modules: dict[str, set[str]], declared: set[str]) -> list[str]:
    """One line per declared distribution whose modules nothing imports (run-time drivers excepted)."""
    imported = set(third_party(modules))
    provided = distribution_modules()
    return [
        f"{dist} is declared but src/moorage imports none of its modules ({', '.join(sorted(provided.get(dist, ())))})"
        for dist in sorted(declared - RUNTIME_DRIVERS)
        if not provided.get(dist, set()) & imported
    ]


def test_every_import_is_a_declared_dependency() -> None:
    problems = undeclared_imports(imported_modules(SOURCE), declared_requirements())
    assert not problems, "\n".join(problems)


def test_every_declared_dependency_is_imported() -> None:
    problems = unused_declarations(imported_modules(SOURCE), declared_requirements())
    assert not problems, "\n".join(problems)


def test_runtime_drivers_are_declared_and_named_in_the_source() -> None:
    declared = declared_requirements()
    assert declared >= RUNTIME_DRIVERS, f"run-time drivers not declared: {sorted(RUNTIME_DRIVERS - declared)}"
    text = "\n".join(path.read_text() for path in SOURCE.rglob("*.py"))
    # The allow-list must not outlive its reason: each driver is still named where it is loaded.
    assert all(driver in text for driver in RUNTIME_DRIVERS), "a run-time driver is no longer used; drop it"


def test_the_check_sees_a_missing_and_a_superfluous_declaration(tmp_path: Path) -> None:
    """The checks themselves: a source importing an undeclared module fails, and so does a
    declaration nothing imports."""
    (tmp_path / "a.py").write_text("import click\nfrom rich.console import Console\nimport os\n")
    (tmp_path / "b.py").write_text("def later() -> None:\n    import cryptography.hazmat\n")
    modules = imported_modules(tmp_path)
    assert set(third_party(modules)) == {"click", "rich", "cryptography"}
    missing = undeclared_imports(modules, {"click", "rich"})
    assert len(missing) == 1
    assert missing[0].startswith("cryptography (imported by b.py)")
    assert undeclared_imports(modules, {"click", "rich", "cryptography"}) == []
    assert unused_declarations(modules, {"click", "rich", "cryptography", "alembic", "asyncpg"}) == [
        "alembic is declared but src/moorage imports none of its modules (alembic)"
    ]


def test_installed_aws_libraries_are_in_the_declared_range() -> None:
    """The tests count what the installed botocore model has; it must be a release pyproject allows."""
    from importlib.metadata import version

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    specs: dict[str, Requirement] = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    for dist in ("boto3", "botocore"):
        assert specs[dist].specifier.contains(version(dist)), f"{dist} {version(dist)} is not {specs[dist]}"
        assert any(s.operator == "<" for s in specs[dist].specifier), f"{dist} needs an upper bound"
