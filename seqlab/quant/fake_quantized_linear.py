"""The quantization-aware-training replacement of a Linear layer."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from seqlab.core.config import param
from seqlab.layers.linear import Linear
from seqlab.quant.clipping_schedule import ClippingSchedule
from seqlab.quant.ema_domain import EmaMinMaxDomain
from seqlab.quant.fake_quantize import fake_quantize_symmetric


class FakeQuantizedLinear(Linear):
    """A Linear layer whose weights and inputs see int8 rounding during training.

    Weights follow the clipping schedule (clipped to the narrowing cap, then, from
    ``quant_start_step``, rounded to symmetric integers with one scale per output row: the
    layout of int8 inference kernels). Inputs are rounded to the range of an EMA min/max
    domain from the same step. ``weight`` reads give the quantized weight; the parameter is
    ``float_weight``. Parameters are named as in ``nn.Linear``, so checkpoints of the
    float model load into it (and back, after :func:`seqlab.quant.qat.strip_fake_quantization`).

    The training step is a buffer (``step``) set by the trainer through
    :func:`seqlab.quant.qat.set_quantization_step`; it is saved in checkpoints, so a restored
    model decodes in the phase it was trained to.
    """

    @dataclasses.dataclass
    class Config(Linear.Config):
        schedule: ClippingSchedule.Config = param(
            ClippingSchedule.Config(), doc="Clipping then fake quantization of the weights."
        )
        activations: EmaMinMaxDomain.Config = param(
            EmaMinMaxDomain.Config(), doc="Range tracking and fake quantization of the inputs."
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.schedule = config.schedule.build()
        self.activations = config.activations.build()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def float_weight(self) -> nn.Parameter:
        """[Dout, Din] the trained parameter (state-dict key ``weight``)."""
        try:
            return self._parameters["weight"]
        except KeyError:
            raise AttributeError("float_weight") from None

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """[Dout, Din] the weight as used at the current step (see ``effective_weight``).

        Code that reads ``.weight`` instead of calling the module (converters, exporters)
        thereby sees the quantized weights too.
        """
        return self.effective_weight()

    def effective_weight(self) -> torch.Tensor:
        """[Dout, Din] the weight as the forward pass uses it at the current step."""
        step, weight = self.step, self.float_weight
        cap = self.schedule.cap(step).to(weight.dtype)
        clipped = torch.where(
            self.schedule.clipping(step),
            torch.maximum(torch.minimum(weight, cap), -cap),
            weight,
        )
        row_max = clipped.detach().abs().amax(dim=1, keepdim=True)
        quantized = fake_quantize_symmetric(clipped, row_max, self.schedule.max_int)
        return torch.where(self.schedule.quantizing(step), quantized, clipped)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Projects the last dimension.

        Args:
          inputs: [..., Din].

        Returns:
          [..., Dout].
        """
        return super().forward(self.activations(inputs, self.schedule.quantizing(self.step)))
