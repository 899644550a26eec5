"""Importing the user's own code: tasks, data and experiments that live outside seqlab.

Two ways, both without editing seqlab:

- ``seqlab --import MODULE_OR_PATH`` (repeatable) imports a dotted module name (found from
  the current directory or ``sys.path``), a ``.py`` file, or a package directory;
- an installed distribution declares modules in the entry-point group ``seqlab.experiments``
  (``[project.entry-points."seqlab.experiments"] mine = "my_package.experiments"``), which the
  registry imports with seqlab's own experiments.

Importing runs the module's ``@register_experiment`` decorators, and marks the module as
trusted, so that its config classes may be re-created from a logdir's ``config.json``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path
from types import ModuleType

from seqlab.core.config import trust_user_module

ENTRY_POINT_GROUP = "seqlab.experiments"


class UserModuleError(ValueError):
    """A user module that cannot be found or imported; the message names it."""


def import_user_module(spec: str) -> ModuleType:
    """Imports ``spec``: a dotted module name, a ``.py`` file, or a package directory.

    A file or directory is imported under its own name (``examples/punctuator`` ->
    ``punctuator``) with its parent directory put first on ``sys.path``, so that its own
    imports of sibling modules work; a dotted name is looked up from the current directory
    first.

    Raises:
      UserModuleError: naming ``spec`` when it is neither an existing path nor importable.
    """
    path = Path(spec)
    if spec.endswith(".py") or path.is_dir() or path.suffix == ".py":
        if not path.exists():
            raise UserModuleError(f"--import {spec}: no such file or directory")
        if path.is_dir() and not (path / "__init__.py").is_file():
            raise UserModuleError(f"--import {spec}: a package directory needs an __init__.py")
        search_dir, name = str(path.resolve().parent), path.stem if path.is_file() else path.name
    else:
        search_dir, name = str(Path.cwd()), spec
    if search_dir not in sys.path:
        sys.path.insert(0, search_dir)
    trust_user_module(name)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and name.startswith(e.name):
            raise UserModuleError(
                f"--import {spec}: no module '{e.name}' (from {search_dir} or sys.path); pass "
                "a dotted module name, a .py file or a package directory"
            ) from None
        raise


def import_entry_point_modules() -> list[str]:
    """Imports every module declared in the ``seqlab.experiments`` entry-point group."""
    names = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        trust_user_module(entry_point.module)
        entry_point.load()
        names.append(entry_point.module)
    return names
