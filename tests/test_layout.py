"""The package's one-way layering: computation never imports plotting, reports or the CLI."""

import ast
from pathlib import Path

import boundgeo

PACKAGE = Path(boundgeo.__file__).parent
PRESENTATION = {"plot", "report", "cli", "__main__"}


def _imported_modules(path: Path) -> set[str]:
    """Absolute module names that `path` imports (relative imports resolved within boundgeo)."""
    parts = ["boundgeo", *path.relative_to(PACKAGE).with_suffix("").parts]
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_computation_never_imports_presentation():
    computation = [
        p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).with_suffix("").parts[0] not in PRESENTATION
    ]
    assert len(computation) > 20  # the walk found the package
    for path in computation:
        bad = {m for m in _imported_modules(path) if m.split(".")[:2] in (["boundgeo", p] for p in PRESENTATION)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_modules_are_grouped_by_what_they_do():
    # attacks, geometry and io are packages; the top level keeps the model wrapper, the shared
    # helpers and the user-facing entry points, not every module
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 14, top
    for group in ("attacks", "geometry", "io"):
        assert (PACKAGE / group / "__init__.py").exists(), group


def test_no_module_is_shadowed_by_a_name_of_its_package():
    # `import boundgeo.attacks.deepfool as m` binds whatever the package's attribute is: a module
    # named like one of its functions would give the function
    import importlib

    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__") or len(parts) < 2:
            continue
        module = importlib.import_module(".".join(("boundgeo", *parts)))
        package = importlib.import_module(".".join(("boundgeo", *parts[:-1])))
        assert getattr(package, parts[-1]) is module, f"boundgeo.{'.'.join(parts)} is shadowed"


def test_flat_module_paths_still_resolve_with_a_warning():
    import pytest

    import boundgeo as bg
    from boundgeo.attacks.boundary import ZERO_NORMAL

    with pytest.warns(DeprecationWarning, match=r"boundgeo\.boundary moved to boundgeo\.attacks\.boundary"):
        assert bg.boundary.ZERO_NORMAL == ZERO_NORMAL
    with pytest.warns(DeprecationWarning, match="geometry.curvature"):
        assert bg.curvature.FOOLING_GROUPS == bg.geometry.curvature.FOOLING_GROUPS
    with pytest.raises(AttributeError, match="no attribute 'spectra'"):
        bg.spectra
