"""Which device a run uses: ``trainer.device`` (and ``--device``) resolved and checked.

Device choice lives here and in the runners that call it; layers, models and data never
branch on the device, they follow the tensors they are given.
"""

from __future__ import annotations

import re

import torch

from seqlab.train.world import World

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
CPU = torch.device("cpu")
_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


class DeviceError(ValueError):
    """A device setting this machine cannot honour; the message names the setting."""


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return f"no CUDA device is visible (torch {torch.__version__}, CUDA {torch.version.cuda})"


def resolve_device(
    setting: str, world: World | None = None, name: str = "trainer.device"
) -> torch.device:
    """The device ``setting`` names, for this process of ``world``.

    ``auto`` is CUDA when present, else the CPU; ``cuda`` is ``cuda:LOCAL_RANK`` (device 0 in
    one process); ``cuda:N`` is GPU N, in one process only.

    Raises:
      DeviceError: an unknown setting, CUDA on a machine without it, a GPU index out of range,
        or too few GPUs for torchrun's processes; ``name`` (the setting or flag) is named.
    """
    world = world or World()
    match = _DEVICE.match(setting.strip())
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise DeviceError(f"{name}={setting!r}: expected {DEVICE_CHOICES}")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return CPU
    if not torch.cuda.is_available():
        raise DeviceError(f"{name}={setting}: {_no_cuda_reason()}; use {name}=cpu or auto")
    count = torch.cuda.device_count()
    if index is not None:
        if world.is_distributed:
            raise DeviceError(
                f"{name}={setting} names one GPU, but torchrun started {world.world_size} "
                f"processes; use {name}=cuda (each process takes cuda:LOCAL_RANK)"
            )
        number = int(index)
    else:
        number = world.local_rank
    if number >= count:
        what = f"process {world.local_rank} on this machine needs" if index is None else "needs"
        raise DeviceError(
            f"{name}={setting}: {what} GPU {number}, but {count} "
            f"{'is' if count == 1 else 'are'} visible"
        )
    return torch.device("cuda", number)


def use_device(device: torch.device, allow_tf32: bool = False) -> None:
    """Makes ``device`` this process's current CUDA device and sets TF32 (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
