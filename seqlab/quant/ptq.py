"""Post-training dynamic int8 quantization of Linear layers, for CPU inference.

Weights become int8 (one scale per output row); inputs are quantized on the fly per call.
This module is the one place that knows which PyTorch API does it:

- eager decoding uses ``torch.ao.quantization.quantize_dynamic`` (fbgemm kernels). It is
  deprecated in favour of torchao, but measured faster here: on 2 CPU cores, one thread,
  beam-4 decoding of 8 sentences with the transformer_small shape took 404 ms in fp32,
  332 ms with torch.ao dynamic int8, 560 ms with torchao's
  ``Int8DynamicActivationInt8WeightConfig`` and 388 ms with torchao int8 weight-only
  (eager, no torch.compile; torch 2.13, torchao 0.18).
- programs for ``torch.export`` use torchao's ``Int8DynamicActivationInt8WeightConfig``:
  torch.ao's packed weights cannot be traced by torch.export, torchao's tensors can.
- ONNX programs are exported in float and quantized by onnxruntime's ``quantize_dynamic``
  (neither PyTorch quantization survives the ONNX exporter).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from seqlab.layers.embedding import TokenEmbedding
from seqlab.quant.int8_logits_embedding import Int8LogitsTokenEmbedding
from seqlab.quant.qat import strip_fake_quantization
from seqlab.train.device import DeviceError

QUANTIZE_MODES = ("none", "int8")
# Layers that read their projections' ``.weight`` (LSTM cells, for the state's dtype), which a
# quantized module cannot serve: their Linear children stay float.
_READS_LINEAR_WEIGHTS = ("LSTMCell",)


def check_quantize_mode(mode: str) -> None:
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"--quantize must be one of {QUANTIZE_MODES}, got {mode!r}")


def check_int8_device(mode: str, device: torch.device) -> None:
    """Refuses int8 on a device other than the CPU: its dynamic int8 kernels are CPU-only."""
    if mode == "int8" and device.type != "cpu":
        raise DeviceError(
            f"--quantize int8 runs on the CPU only (dynamic int8 kernels), not on {device}; "
            "use --device cpu"
        )


def quantize_int8(model: nn.Module, exportable: bool = False) -> nn.Module:
    """A copy of ``model`` (in eval mode) with dynamic int8 Linear layers.

    Fake-quantized (QAT) layers are first folded into plain Linear layers with their
    quantization-ready weights. Embedding lookups stay float; the output projection tied to
    them runs in int8 (``Int8LogitsTokenEmbedding``) in the eager copy and stays float in the
    exportable one. The projections of layers that read their weights directly (LSTM cells)
    stay float.

    Args:
      model: a float model; not modified.
      exportable: produce layers that ``torch.export`` can trace (torchao) rather than the
        fastest eager ones (torch.ao).
    """
    first = next(model.parameters(), None)
    if first is not None:
        check_int8_device("int8", first.device)
    model = folded_copy(model)
    names = _quantizable_linears(model)
    if exportable:
        import_torchao()
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        wanted = set(names)
        quantize_(model, Int8DynamicActivationInt8WeightConfig(), lambda _, fqn: fqn in wanted)
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, set(names), dtype=torch.qint8)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is TokenEmbedding:
                setattr(parent, name, Int8LogitsTokenEmbedding(child))
    return model


def folded_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with fake-quantized (QAT) layers folded into
    ``nn.Linear`` ones, ready for an int8 converter (``strip_fake_quantization``)."""
    # The bound data pipeline (tokenizer, examples) is shared with the copy, not copied.
    data = getattr(model, "data", None)
    memo = {} if data is None else {id(data): data}
    return strip_fake_quantization(copy.deepcopy(model, memo)).eval()


def _quantizable_linears(model: nn.Module) -> list[str]:
    """Qualified names of the ``nn.Linear`` modules that are called as modules."""
    names = []
    for parent_name, parent in model.named_modules():
        if type(parent).__name__ in _READS_LINEAR_WEIGHTS:
            continue
        for child_name, child in parent.named_children():
            if type(child) is nn.Linear:
                names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return names


def import_torchao() -> None:
    """Imports torchao (registering its ops), silencing its notes about optional GPU kernels.

    Raises:
      ImportError: saying which extra installs it.
    """
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        import torchao  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "torchao is needed for int8 torch.export programs: pip install 'seqlab[export]'"
        ) from e
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def quantize_onnx_int8(source: Path, destination: Path, keep_float: tuple[str, ...] = ()) -> None:
    """Dynamic int8 quantization of an ONNX program's MatMul weights (onnxruntime's tool).

    ``destination`` may equal ``source``. Nodes that read a constant whose name starts with
    one of ``keep_float`` (module paths, e.g. ``task.frontend.``) stay float.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = []
    if keep_float:
        graph = onnx.load(str(source)).graph
        names = {init.name for init in graph.initializer if init.name.startswith(keep_float)}
        excluded = [node.name for node in graph.node if names.intersection(node.input)]
    tmp = destination.with_name(f".{destination.name}.int8-tmp")
    try:
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
