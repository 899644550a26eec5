"""Running a CTranslate2 artifact: its ``ctranslate2.Translator``, in seqlab's terms (ids).

Imports no model code (``ctranslate2_converter`` writes the model; this module reads it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqlab.export.artifact import ArtifactError


def load_translator(
    directory: Path, manifest: dict[str, Any], device: torch.device, num_threads: int = 0
) -> Any:
    """The artifact's ``ctranslate2.Translator`` on ``device`` (cpu or cuda[:N]).

    Raises:
      ArtifactError: the ctranslate2 package is missing, or has no CUDA where it is asked for.
    """
    try:
        import ctranslate2
    except ImportError:
        raise ArtifactError(
            f"{directory} is a ctranslate2 artifact; install the ctranslate2 package "
            "(pip install 'seqlab[ctranslate2]')"
        ) from None
    if device.type == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise ArtifactError(
            f"--device {device}: this ctranslate2 ({ctranslate2.__version__}) sees no CUDA "
            "device; use --device cpu"
        )
    threads = num_threads if num_threads > 0 else torch.get_num_threads()
    return ctranslate2.Translator(
        str(directory / manifest["ctranslate2"]["model_dir"]),
        device=device.type,
        device_index=device.index or 0,
        intra_threads=threads,
    )


def translate_ids(
    translator: Any,
    pieces: list[str],
    source_ids: list[list[int]],
    max_lengths: list[int],
    beam_size: int = 1,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """Translates with a ``ctranslate2.Translator`` in seqlab's terms.

    Args:
      translator: loaded from the artifact's model directory.
      pieces: the vocabulary, piece of id i at index i.
      source_ids: token id lists, each ending in EOS.
      max_lengths: most output tokens per example, EOS not counted (as seqlab's beam search
        computes them); CTranslate2 takes one limit per batch, so longer outputs are cut.
      beam_size: 1 = greedy.
      length_penalty: CTranslate2's exponent: a hypothesis scores log P / |Y| ** penalty
        (seqlab's GNMT penalty ((5 + |Y|) / 6) ** alpha differs, so beams may differ).

    Returns:
      The best hypothesis of each example as ids, without BOS and EOS.
    """
    index = {piece: i for i, piece in enumerate(pieces)}
    results = translator.translate_batch(
        [[pieces[i] for i in row] for row in source_ids],
        beam_size=beam_size,
        length_penalty=length_penalty,
        max_decoding_length=max(max_lengths),
        max_input_length=0,
    )
    return [
        [index[piece] for piece in result.hypotheses[0]][:limit]
        for result, limit in zip(results, max_lengths, strict=True)
    ]
