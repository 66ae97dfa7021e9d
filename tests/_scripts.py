"""Load an analysis script as a module, for tests of its helpers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_script(relative: str | Path, name: str | None = None) -> ModuleType:
    """The script at ``relative`` (to the repository, or an absolute path), executed as a fresh
    module named ``name`` (default: after the file) and registered under it in ``sys.modules``,
    which dataclasses need. The script's folder is on ``sys.path`` while it runs, as when Python
    runs it, so that its own imports (``from _environment import ...``) resolve."""
    path = ROOT / relative
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module
