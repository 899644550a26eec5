"""``seqlab export``: a trained logdir -> a self-contained inference artifact directory.

Formats: ``torch`` (``torch.export`` programs, ``.pt2``), ``onnx`` (the dynamo-based ONNX
exporter, run with onnxruntime) and ``ctranslate2`` (a CTranslate2 model directory). See
``seqlab.export.artifact`` for the layout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from seqlab.data.sentencepiece_tokenizer import EOS_ID, PAD_ID
from seqlab.export.artifact import FORMATS, PROGRAM_SUFFIX, ArtifactError, write_manifest
from seqlab.export.predictor import Predictor
from seqlab.export.programs import (
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    STEP_INPUTS,
    STEP_OUTPUTS,
    DecoderStepProgram,
    EncoderProgram,
    ProgramShapes,
    encoder_example,
    step_example,
)
from seqlab.models.mt.transformer_model import TransformerMT
from seqlab.quant.ptq import (
    check_quantize_mode,
    folded_copy,
    quantize_int8,
    quantize_onnx_int8,
)
from seqlab.train.run_context import TOKENIZER_FILE


def export_artifact(
    logdir: Path,
    out: Path,
    format: str,
    quantize: str = "none",
    max_batch_size: int = 64,
    max_input_tokens: int = 256,
    checkpoint: str | int | Path | None = None,
) -> Path:
    """Exports the newest good checkpoint of ``logdir`` (or the one ``checkpoint`` names: a
    step, or a checkpoint file) to the artifact directory ``out``.

    The artifact is written under a temporary name and renamed when complete.

    Args:
      logdir: a training logdir of a TransformerMT experiment.
      out: the artifact directory to create; it must not exist (or be empty).
      format: "torch", "onnx" or "ctranslate2".
      quantize: "none" or "int8" (dynamic int8 Linear layers).
      max_batch_size: the predictor's limit on texts per call, recorded in the manifest.
      max_input_tokens: the predictor's limit on tokens per text, recorded in the manifest.
      checkpoint: a step of the run's checkpoints or a checkpoint file (None: the newest).

    Returns:
      ``out``.
    """
    if format not in FORMATS:
        raise ArtifactError(f"--format must be one of {FORMATS}, got {format!r}")
    check_quantize_mode(quantize)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArtifactError(f"{out} already exists; choose another --out or remove it")
    predictor = Predictor.from_logdir(Path(logdir), pack_linear=False, checkpoint=checkpoint)
    context = predictor.context
    task = context.task
    if not isinstance(task, TransformerMT):
        raise ArtifactError(
            f"seqlab export supports TransformerMT models; {logdir} trains {type(task).__name__}"
        )
    task.eval()
    shapes = ProgramShapes.of(task)
    manifest: dict[str, Any] = {
        "format": format,
        "quantize": quantize,
        "tokenizer": "spm.model",
        "config": "config.json",
        "model": {
            "architecture": "TransformerMT",
            **dataclasses.asdict(shapes),
            "max_output_tokens": shapes.max_positions - 1,
            "start_id": task.config.start_id,
            "eos_id": EOS_ID,
            "pad_id": PAD_ID,
        },
        "beam_search": task.config.beam_search.to_dict(),
        "limits": {"max_batch_size": max_batch_size, "max_input_tokens": max_input_tokens},
        "source": {
            "logdir": str(Path(logdir).resolve()),
            "experiment": context.config.name,
            "checkpoint": str(predictor.checkpoint_path),
        },
    }
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if format == "ctranslate2":
            from seqlab.export.ctranslate2_converter import convert_to_ctranslate2

            manifest["ctranslate2"] = convert_to_ctranslate2(
                task, context.data.tokenizer, tmp / "ctranslate2", quantize
            )
        else:
            manifest["programs"] = _export_programs(task, shapes, format, quantize, tmp)
            if format == "torch" and quantize == "int8":
                manifest["requires"] = ["torchao"]
        shutil.copyfile(context.logdir / TOKENIZER_FILE, tmp / "spm.model")
        config_text = json.dumps(context.config.to_dict(), indent=1, sort_keys=True)
        (tmp / "config.json").write_text(config_text + "\n")
        write_manifest(tmp, manifest)
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _export_programs(
    task: TransformerMT, shapes: ProgramShapes, format: str, quantize: str, directory: Path
) -> dict[str, Any]:
    """Writes the encoder and decoder-step programs; returns their manifest entries."""
    if quantize == "int8":
        # onnxruntime quantizes MatMuls with constant weights: fold QAT layers first.
        task = quantize_int8(task, exportable=True) if format == "torch" else folded_copy(task)
    programs = {
        "encoder": (EncoderProgram(task), encoder_example(shapes), ENCODER_INPUTS, ENCODER_OUTPUTS),
        "decoder_step": (DecoderStepProgram(task), step_example(shapes), STEP_INPUTS, STEP_OUTPUTS),
    }
    entries = {}
    for name, (program, (inputs, dynamic_shapes), input_names, output_names) in programs.items():
        path = directory / f"{name}{PROGRAM_SUFFIX[format]}"
        with torch.no_grad():
            if format == "torch":
                exported = torch.export.export(program, inputs, dynamic_shapes=dynamic_shapes)
                torch.export.save(exported, path)
            else:
                _export_onnx(program, inputs, dynamic_shapes, input_names, output_names, path)
                if quantize == "int8":
                    quantize_onnx_int8(path, path)
        entries[name] = {
            "file": path.name,
            "inputs": list(input_names),
            "outputs": list(output_names),
        }
    return entries


def _export_onnx(
    program: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    dynamic_shapes: tuple[dict, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    path: Path,
) -> None:
    """The dynamo-based ONNX exporter, with its progress messages kept quiet."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # Dims shared by several inputs are reported once per input; they are meant to be.
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
            torch.onnx.export(
                program,
                inputs,
                str(path),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=list(input_names),
                output_names=list(output_names),
                external_data=False,
                verbose=False,
            )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
