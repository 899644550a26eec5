"""The artifact layout: checksummed manifest, clear errors; the predictors' input limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqlab.export.artifact import MANIFEST, ArtifactError, read_manifest, write_manifest
from seqlab.export.input_limits import InputTooLargeError, add_eos_within_limit, check_batch_size


def make_artifact(directory: Path) -> Path:
    directory.mkdir()
    (directory / "encoder.pt2").write_bytes(b"program")
    (directory / "sub").mkdir()
    (directory / "sub" / "model.bin").write_bytes(b"weights")
    write_manifest(directory, {"format": "torch", "programs": {}})
    return directory


def test_manifest_lists_every_file_with_its_sha256(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "a")
    manifest = read_manifest(artifact)
    assert set(manifest["files"]) == {"encoder.pt2", "sub/model.bin"}
    assert manifest["format"] == "torch" and manifest["format_version"] == 2


def test_a_corrupt_file_is_named(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "a")
    (artifact / "sub" / "model.bin").write_bytes(b"weightz")
    with pytest.raises(ArtifactError, match=r"sub/model.bin does not match its sha256"):
        read_manifest(artifact)
    (artifact / "sub" / "model.bin").unlink()
    with pytest.raises(ArtifactError, match=r"model.bin is listed .* but missing"):
        read_manifest(artifact)


def test_a_directory_without_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="seqlab export --logdir"):
        read_manifest(tmp_path)


def test_bad_manifest_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text('{\n "format": "torch",\n oops\n}')
    with pytest.raises(ArtifactError, match="line 3"):
        read_manifest(tmp_path)


def test_other_versions_and_formats_are_refused(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "a")
    manifest = json.loads((artifact / MANIFEST).read_text())
    (artifact / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99"):
        read_manifest(artifact)
    (artifact / MANIFEST).write_text(json.dumps({**manifest, "format": "tflite"}))
    with pytest.raises(ArtifactError, match="'tflite'"):
        read_manifest(artifact)


def test_input_limits_name_the_limit() -> None:
    check_batch_size(2, 2)
    with pytest.raises(InputTooLargeError, match="3 inputs in one call; the limit is 2"):
        check_batch_size(3, 2)
    assert add_eos_within_limit([[5, 6], [7]], 3, 3) == [[5, 6, 3], [7, 3]]
    with pytest.raises(InputTooLargeError, match="input 1 has 4 tokens; the limit is 3"):
        add_eos_within_limit([[5], [5, 6, 7]], 3, 3)
