"""``seqlab export``: a trained logdir -> a self-contained inference artifact directory.

Formats: ``torch`` (``torch.export`` programs, ``.pt2``), ``onnx`` (the dynamo-based ONNX
exporter, run with onnxruntime) and ``ctranslate2`` (a CTranslate2 model directory). See
``seqlab.export.artifact`` for the layout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.export.passes import move_to_device_pass

from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID, PAD_ID
from seqlab.export.artifact import FORMATS, PROGRAM_SUFFIX, ArtifactError, write_manifest
from seqlab.export.model_families import (
    LANGUAGE_MODEL,
    SPEECH_CTC,
    TRANSLATION,
    ModelFamily,
    family_of,
)
from seqlab.export.predictor import Predictor
from seqlab.export.programs import (
    ENCODER_INPUTS,
    DecoderStepProgram,
    EncoderProgram,
    check_encoder_traceable,
    max_positions,
    program_examples,
)
from seqlab.export.speech_programs import (
    AUDIO_INPUTS,
    CTC_OUTPUTS,
    FLOAT_IN_ONNX_INT8,
    CtcProgram,
    ctc_program_examples,
    sample_range,
)
from seqlab.quant.ptq import (
    check_int8_device,
    check_quantize_mode,
    folded_copy,
    quantize_int8,
    quantize_onnx_int8,
)
from seqlab.train.device import resolve_device
from seqlab.train.run_context import TOKENIZER_FILE


def export_artifact(
    logdir: Path,
    out: Path,
    format: str,
    quantize: str = "none",
    max_batch_size: int = 64,
    max_input_tokens: int = 256,
    checkpoint: str | int | Path | None = None,
    device: str = "cpu",
    overrides: Sequence[str] = (),
) -> Path:
    """Exports the newest good checkpoint of ``logdir`` (or the one ``checkpoint`` names: a
    step, or a checkpoint file) to the artifact directory ``out``.

    The artifact is written under a temporary name and renamed when complete.

    Args:
      logdir: a training logdir of a model family that ``seqlab.export.model_families``
        lists for ``format``.
      out: the artifact directory to create; it must not exist (or be empty).
      format: "torch", "onnx" or "ctranslate2".
      quantize: "none" or "int8" (dynamic int8 Linear layers).
      max_batch_size: the predictor's limit on texts per call, recorded in the manifest.
      max_input_tokens: the predictor's limit on tokens per text, recorded in the manifest.
      checkpoint: a step of the run's checkpoints or a checkpoint file (None: the newest).
      device: where the model is loaded and traced (cpu, cuda, cuda:N, auto); the saved
        programs are moved to the CPU, so an artifact runs on any device.
      overrides: ``--set`` values applied to the run's config first (decoding settings such
        as the beam or the length limits; none that changes the model).

    Returns:
      ``out``.
    """
    if format not in FORMATS:
        raise ArtifactError(f"--format must be one of {FORMATS}, got {format!r}")
    check_quantize_mode(quantize)
    target = resolve_device(device, name="--device")
    check_int8_device(quantize, target)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArtifactError(f"{out} already exists; choose another --out or remove it")
    predictor = Predictor.from_logdir(
        Path(logdir), pack_linear=False, device=target, checkpoint=checkpoint, overrides=overrides
    )
    context = predictor.context
    task = context.task
    architecture = type(task).__name__
    family = family_of(architecture, format)
    if format != "ctranslate2" and family.kind == TRANSLATION:
        check_encoder_traceable(task)
    task.eval()
    manifest: dict[str, Any] = {
        "format": format,
        "quantize": quantize,
        "tokenizer": "spm.model",
        "config": "config.json",
        "model": {"architecture": architecture, "kind": family.kind},
        "limits": {"max_batch_size": max_batch_size},
        "source": {
            "logdir": str(Path(logdir).resolve()),
            "experiment": context.config.name,
            "checkpoint": str(predictor.checkpoint_path),
            "step": predictor.checkpoint_step,
        },
    }
    if family.kind == SPEECH_CTC:
        c = task.config
        if c.lm_fusion.lm_logdir:
            raise ArtifactError(
                f"an artifact does not carry the fused language model of task.lm_fusion."
                f"lm_logdir={c.lm_fusion.lm_logdir}; export without it "
                "(--set task.lm_fusion.lm_logdir=) or transcribe with seqlab infer --logdir"
            )
        manifest["model"].update(
            vocab_size=c.vocab_size, blank_id=PAD_ID, sample_rate=context.data.config.sample_rate
        )
        manifest["ctc_search"] = {
            "decoder": c.decoder,
            "beam_size": c.beam_size,
            "labels_per_frame": c.labels_per_frame,
        }
    else:
        manifest["model"].update(_text_model_section(task, family))
        manifest["limits"]["max_input_tokens"] = max_input_tokens
        if family.kind == LANGUAGE_MODEL:
            manifest["sampler"] = task.config.sampler.to_dict()
        else:
            manifest["beam_search"] = task.config.beam_search.to_dict()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if format == "ctranslate2":
            from seqlab.export.ctranslate2_converter import convert_to_ctranslate2

            manifest["ctranslate2"] = convert_to_ctranslate2(
                task, context.data.tokenizer, tmp / "ctranslate2", quantize
            )
        elif family.kind == SPEECH_CTC:
            manifest["programs"], (fewest, most) = _export_ctc_program(task, format, quantize, tmp)
            manifest["limits"].update(min_samples=fewest, max_samples=most)
        else:
            manifest.update(_export_programs(task, family, format, quantize, tmp))
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


def _text_model_section(task: torch.nn.Module, family: ModelFamily) -> dict[str, Any]:
    """The manifest's model dims and token ids of a translation model or an LM."""
    limit = max_positions(task)
    is_lm = family.kind == LANGUAGE_MODEL
    section = {
        "vocab_size": task.config.embedding.vocab_size,
        "max_positions": limit,
        "start_id": BOS_ID if is_lm else task.config.start_id,
        "eos_id": EOS_ID,
        "pad_id": PAD_ID,
    }
    if not is_lm:
        section["max_output_tokens"] = min(task.max_output_length(), limit - 1)
    return section


def _prepared(task: torch.nn.Module, format: str, quantize: str) -> torch.nn.Module:
    """The task as the format exports it: torchao int8 (torch), QAT layers folded (onnx, which
    onnxruntime quantizes after export: it quantizes MatMuls with constant weights)."""
    if quantize != "int8":
        return task
    return quantize_int8(task, exportable=True) if format == "torch" else folded_copy(task)


def _export_ctc_program(
    task: torch.nn.Module, format: str, quantize: str, directory: Path
) -> tuple[dict[str, Any], tuple[int, int | None]]:
    """Writes a speech model's audio -> CTC log-probs program; returns its ``programs``
    manifest section and the fewest and most samples per row it accepts."""
    program = CtcProgram(_prepared(task, format, quantize)).eval()
    inputs, dims = ctc_program_examples(task)
    path = directory / f"encoder{PROGRAM_SUFFIX[format]}"
    with torch.no_grad():
        # Exported first for ONNX too: the samples' range is read from torch.export's program.
        exported = torch.export.export(
            program, inputs, dynamic_shapes=dict(zip(AUDIO_INPUTS, dims, strict=True))
        )
        _save_program(exported, inputs, None, format, quantize, AUDIO_INPUTS, CTC_OUTPUTS, path)
    entry = {"file": path.name, "inputs": list(AUDIO_INPUTS), "outputs": list(CTC_OUTPUTS)}
    return {"encoder": entry}, sample_range(exported)


def _save_program(
    program: torch.nn.Module | torch.export.ExportedProgram,
    inputs: tuple[torch.Tensor, ...],
    dynamic_shapes: dict[str, Any] | None,
    format: str,
    quantize: str,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    path: Path,
) -> None:
    """Exports ``program`` (a module, or a program torch.export made) to ``path``."""
    if format == "torch":
        exported = program
        if not isinstance(exported, torch.export.ExportedProgram):
            exported = torch.export.export(program, inputs, dynamic_shapes=dynamic_shapes)
        # Traced on any device, saved for the CPU: the predictor moves it where asked.
        torch.export.save(move_to_device_pass(exported, "cpu"), path)
    else:
        _export_onnx(program, inputs, dynamic_shapes, input_names, output_names, path)
        if quantize == "int8":
            quantize_onnx_int8(path, path, FLOAT_IN_ONNX_INT8)


def _export_programs(
    task: torch.nn.Module,
    family: ModelFamily,
    format: str,
    quantize: str,
    directory: Path,
) -> dict[str, Any]:
    """Writes the encoder and decoder-step programs; returns their manifest sections
    (``programs`` and ``state``)."""
    task = _prepared(task, format, quantize)
    examples = program_examples(task, family)
    layout = examples.layout
    step_inputs = ("ids", *layout.carried, *layout.constants)
    step_outputs = ("log_probs", *(f"new_{name}" for name in layout.carried))
    programs = {
        "decoder_step": (DecoderStepProgram(task, layout), examples.step, step_inputs, step_outputs)
    }
    state: dict[str, Any] = {
        "carried": list(layout.carried),
        "constants": list(layout.constants),
        # Growing caches accept T up to the position table's end: the most steps.
        "max_steps": max_positions(task) if layout.growing_caches else None,
    }
    if examples.encoder is None:
        _check_zero_state(task, examples.initial_carried)
        state["initial_shapes"] = examples.initial_shapes
    else:
        encoder = EncoderProgram(task, family, layout)
        outputs = (*layout.carried, *layout.constants)
        programs["encoder"] = (encoder, examples.encoder, ENCODER_INPUTS, outputs)
    entries = {}
    for name, (program, (inputs, dims), input_names, output_names) in programs.items():
        path = directory / f"{name}{PROGRAM_SUFFIX[format]}"
        program.eval()
        dynamic_shapes = _by_parameter(program, dims)
        with torch.no_grad():
            _save_program(
                program, inputs, dynamic_shapes, format, quantize, input_names, output_names, path
            )
        entries[name] = {
            "file": path.name,
            "inputs": list(input_names),
            "outputs": list(output_names),
        }
    return {"programs": entries, "state": state}


def _by_parameter(program: torch.nn.Module, dynamic_shapes: tuple[dict, ...]) -> dict[str, Any]:
    """Dynamic shapes keyed by ``forward``'s parameter names (``*tensors`` gets a tuple)."""
    if isinstance(program, DecoderStepProgram):
        return {"ids": dynamic_shapes[0], "tensors": tuple(dynamic_shapes[1:])}
    return dict(zip(ENCODER_INPUTS, dynamic_shapes, strict=True))


def _check_zero_state(task: torch.nn.Module, state: tuple[torch.Tensor, ...]) -> None:
    """A language model's artifact starts from zeros; refuses a model whose state does not."""
    if any(bool(tensor.any()) for tensor in state):
        raise ArtifactError(
            f"{type(task).__name__}.init_state is not all zeros; its artifact would start "
            "from the wrong state"
        )


def _export_onnx(
    program: torch.nn.Module | torch.export.ExportedProgram,
    inputs: tuple[torch.Tensor, ...],
    dynamic_shapes: dict[str, Any] | None,
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
