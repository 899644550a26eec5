"""`seqlab --import`: the user's own module registers experiments and is trusted to load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.core.config import Config, ConfigError
from seqlab.core.registry import get_experiment
from seqlab.core.user_modules import UserModuleError, import_user_module

_MODULE = """
import dataclasses
from seqlab.core.config import Config, param
from seqlab.core.registry import register_experiment
from seqlab.experiments.lm.bible_en import transformer_tiny

@dataclasses.dataclass
class Extra(Config):
    size: int = param(3, doc="A user field.")

@register_experiment("user.{name}")
def mine():
    return transformer_tiny()
"""


def _write_module(directory: Path, name: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(_MODULE.replace("{name}", name))
    return path


def test_a_py_file_registers_its_experiments_and_its_configs_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_module(tmp_path, "user_mod_file")
    data = {"__class__": "user_mod_file:Extra", "size": 5}
    with pytest.raises(ConfigError, match="seqlab --import"):
        Config.from_dict(data)
    assert main(["--import", str(path), "list"]) == 0
    assert "user.user_mod_file" in capsys.readouterr().out.split()
    assert get_experiment("user.user_mod_file").name == "user.user_mod_file"
    assert dataclasses.asdict(Config.from_dict(data)) == {"size": 5}


def test_a_package_directory_and_a_dotted_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "user_pkg_dir"
    package.mkdir()
    (package / "__init__.py").write_text("from . import inner  # noqa: F401\n")
    _write_module(package, "inner")
    assert import_user_module(str(package)).__name__ == "user_pkg_dir"
    monkeypatch.chdir(tmp_path)
    _write_module(tmp_path, "user_mod_dotted")
    assert import_user_module("user_mod_dotted").__name__ == "user_mod_dotted"


def test_missing_modules_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UserModuleError, match="no such file"):
        import_user_module(str(tmp_path / "absent.py"))
    monkeypatch.chdir(tmp_path)
    assert main(["--import", "no_such_module_xyz", "list"]) == 1
    assert "no module 'no_such_module_xyz'" in capsys.readouterr().err
