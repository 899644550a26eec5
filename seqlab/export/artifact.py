"""The on-disk layout of an exported artifact: files, manifest and checksums.

An artifact is a directory::

    manifest.json        what the files are, their sha256, model dims, token ids, limits
    encoder.<ext>        the encoder program (.pt2 = torch.export, .onnx = ONNX; not for LMs;
                         Conformer-CTC: the whole model, audio to per-frame CTC log-probs)
    decoder_step.<ext>   the single decoder step program (not for Conformer-CTC)
    ctranslate2/         (ctranslate2 format, instead of the programs) the CTranslate2 model
    spm.model            the SentencePiece tokenizer
    config.json          the full experiment config the model was trained with

This module only reads and writes that layout; it imports no model, training or experiment
code, so serving processes can load an artifact without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from seqlab.core.file_hash import sha256_of

MANIFEST = "manifest.json"
# 2: the programs' state tensors are listed by name (every model family); 1: TransformerMT.
FORMAT_VERSION = 2
FORMATS = ("torch", "onnx", "ctranslate2")
PROGRAM_SUFFIX = {"torch": ".pt2", "onnx": ".onnx"}


class ArtifactError(ValueError):
    """An artifact is missing, incomplete or corrupt; the message names the file."""


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Adds the sha256 of every other file in ``directory`` and writes ``manifest.json``."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = {str(p.relative_to(directory)): sha256_of(p) for p in files}
    path = directory / MANIFEST
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(directory: Path, verify: bool = True) -> dict[str, Any]:
    """Reads ``manifest.json`` and (by default) checks every listed file's sha256.

    Raises:
      ArtifactError: naming the missing or mismatching file.
    """
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"{path} not found: is {directory} an artifact? "
            f"(`seqlab export --logdir LOGDIR --format torch --out {directory}` makes one)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {version!r}; this seqlab reads version {FORMAT_VERSION} "
            "(export the run again)"
        )
    if manifest.get("format") not in FORMATS:
        raise ArtifactError(f"{path}: format {manifest.get('format')!r}; expected one of {FORMATS}")
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file = directory / name
            if not file.is_file():
                raise ArtifactError(f"{file} is listed in {path} but missing")
            if sha256_of(file) != expected:
                raise ArtifactError(f"{file} does not match its sha256 in {path} (corrupt copy?)")
    return manifest
