"""Checks of the files a data config names, made before anything is prepared or trained:
every ``*_path`` exists, is a file and is not empty, and the corpus is a built-in one."""

from __future__ import annotations

from pathlib import Path

from seqlab.core.config import Config, ConfigError
from seqlab.data.corpora.catalog import UnknownCorpusError, known_corpora


class DataPathError(ConfigError):
    """A data path names no file, a directory or an empty file; the message names the key."""


def check_data_paths(config: Config, prefix: str = "data.") -> None:
    """Checks every non-empty ``*_path`` leaf (dev, test and tokenizer files too) and every
    ``corpus`` leaf of ``config``, a data config whose keys start with ``prefix``.

    Raises:
      DataPathError: naming the key and the file.
      UnknownCorpusError: naming the key and the built-in corpora.
    """
    streaming = bool(getattr(config, "streaming", False))
    for key, value in config.flatten(prefix).items():
        if not isinstance(value, str) or not value:
            continue
        if key == f"{prefix}train_path" and streaming:
            _check_stream_files(key, value)
        elif key.endswith("_path"):
            problem = _file_problem(Path(value))
            if problem:
                raise DataPathError(f"{key}={value}: {problem}")
        elif key.rsplit(".", 1)[-1] == "corpus" and value not in known_corpora():
            raise UnknownCorpusError(
                f"{key}={value}: unknown corpus; built-in corpora: {', '.join(known_corpora())} "
                f"(or set {key}= and the data paths of your own files)"
            )


def _check_stream_files(key: str, value: str) -> None:
    """Streaming mode's training files: a file, a directory of them or a glob pattern; each
    must be a non-empty file."""
    from seqlab.data.streamed_pairs import resolve_stream_files

    try:
        files = resolve_stream_files(value)
    except FileNotFoundError:
        raise DataPathError(
            f"{key}={value}: no training files (a file, a directory of .tsv, .jsonl or "
            f".parquet files, or a glob pattern)"
        ) from None
    for path in files:
        problem = _file_problem(path)
        if problem:
            raise DataPathError(f"{key}={value}: {path} {problem}")


def _file_problem(path: Path) -> str:
    """What is wrong with ``path`` as an input file, or "" if nothing."""
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a directory, not a file"
    if not path.is_file():
        return "is not a regular file"
    if path.stat().st_size == 0:
        return "the file is empty"
    return ""


def check_dataset(paths: dict[str, Path], dataset: str, flag: str = "--dataset") -> None:
    """Refuses a dataset name that is not one of ``paths`` (a data object's ``paths()``).

    Raises:
      ConfigError: naming ``flag``, the dataset and the datasets there are.
    """
    if dataset not in paths:
        raise ConfigError(f"{flag} {dataset}: no such dataset; datasets: {', '.join(paths)}")
