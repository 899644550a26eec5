"""Loading an artifact's programs as plain callables: tensors in, tuple of tensors out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.export.passes import move_to_device_pass

from seqlab.export.artifact import ArtifactError

CPU = torch.device("cpu")

Program = Callable[..., tuple[torch.Tensor, ...]]


def load_torch_program(path: Path, requires: list[str], device: torch.device = CPU) -> Program:
    """A ``torch.export`` program saved with ``torch.export.save`` (on the CPU), on ``device``."""
    if "torchao" in requires:
        from seqlab.quant.ptq import import_torchao

        import_torchao()  # registers the int8 ops the program calls
    program = torch.export.load(path)
    if device != CPU:
        # Moves the weights and rewrites the devices the traced ops name.
        program = move_to_device_pass(program, device)
    module = program.module()

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(module(*inputs))

    return run


def load_onnx_program(
    path: Path, input_names: list[str], num_threads: int = 0, device: torch.device = CPU
) -> Program:
    """An ONNX program run with onnxruntime on the CPU or with its CUDA provider
    (``num_threads`` 0 = torch's count). Its inputs and outputs are CPU tensors."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ArtifactError(
            f"{path} is an ONNX program; install onnxruntime (pip install 'seqlab[export]')"
        ) from e
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # As many threads as torch uses (OMP_NUM_THREADS), and no busy-waiting between the many
    # small step calls, which only steals CPU from other processes.
    options.intra_op_num_threads = num_threads if num_threads > 0 else torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise ArtifactError(
                f"--device {device}: this onnxruntime has no CUDA provider "
                "(pip install onnxruntime-gpu); use --device cpu"
            )
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), *providers]
    session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    expected = [i.name for i in session.get_inputs()]
    if expected != input_names:
        raise ArtifactError(f"{path} takes inputs {expected}; the manifest says {input_names}")

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed: dict[str, Any] = {
            name: x.detach().cpu().contiguous().numpy()
            for name, x in zip(input_names, inputs, strict=True)
        }
        return tuple(torch.from_numpy(out) for out in session.run(None, feed))

    return run


def load_program(
    directory: Path,
    manifest: dict[str, Any],
    name: str,
    num_threads: int = 0,
    device: torch.device = CPU,
) -> Program:
    """The program ``name`` ("encoder" or "decoder_step") of the artifact in ``directory``."""
    entry = manifest["programs"][name]
    path = directory / entry["file"]
    if manifest["format"] == "torch":
        return load_torch_program(path, manifest.get("requires", []), device)
    if manifest["format"] == "onnx":
        logging.getLogger("onnxruntime").setLevel(logging.ERROR)
        return load_onnx_program(path, entry["inputs"], num_threads, device)
    raise ArtifactError(f"{directory}: format {manifest['format']!r} has no programs to run")
