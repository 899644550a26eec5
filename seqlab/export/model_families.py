"""Which trained models an artifact can hold, in which formats, and how each maps onto the
programs of ``seqlab.export.programs``.

A family is named by its task class. Its incremental state (the NestedMap its ``extend_step``
takes) splits into *constants*, computed once from the source by the encoder program and
passed through every step unchanged, and *carried* tensors, which each step returns anew.
Imports no model code, so that an artifact's predictor can look its family up by name.
"""

from __future__ import annotations

import dataclasses

from seqlab.export.artifact import FORMATS, ArtifactError

TRANSLATION = "translation"
LANGUAGE_MODEL = "language_model"
SPEECH_CTC = "speech_ctc"


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """How one task class is exported."""

    kind: str
    """``translation`` (encoder program, beam search), ``language_model`` (no encoder,
    sampled continuations of a prompt) or ``speech_ctc`` (one program from audio samples to
    per-frame CTC log-probs, searched in the predictor)."""
    constants: tuple[str, ...]
    """Top-level state keys the encoder program computes once; the rest is carried."""
    growing_caches: bool
    """The carried tensors are self-attention caches ``[N, L, H, T, Dh]`` that grow by one
    position per step, and the state's ``step`` is T; otherwise they keep their shape."""
    formats: tuple[str, ...]
    """The artifact formats that can express the model."""


FAMILIES: dict[str, ModelFamily] = {
    "TransformerMT": ModelFamily(
        TRANSLATION, ("cross_key", "cross_value", "encoder_paddings"), True, FORMATS
    ),
    # RNMT+ and the hybrid (a Transformer encoder under the RNMT+ decoder) are one class.
    "RNMTPlusMT": ModelFamily(TRANSLATION, ("source",), False, ("torch", "onnx")),
    "TransformerLM": ModelFamily(LANGUAGE_MODEL, (), True, ("torch", "onnx")),
    "LSTMLM": ModelFamily(LANGUAGE_MODEL, (), False, ("torch", "onnx")),
    "ConformerCtc": ModelFamily(SPEECH_CTC, (), False, ("torch", "onnx")),
}

# Why a format cannot express a family, for the refusal (docs/export.md has the table).
WHY_NOT: dict[tuple[str, str], str] = {
    ("RNMTPlusMT", "ctranslate2"): "CTranslate2 has no RNMT+ decoder",
    ("TransformerLM", "ctranslate2"): "seqlab converts only TransformerMT to CTranslate2",
    ("LSTMLM", "ctranslate2"): "CTranslate2 has no LSTM models",
    ("ConformerCtc", "ctranslate2"): "CTranslate2 has no Conformer-CTC models",
}
NOT_EXPORTED: dict[str, str] = {
    "ListenAttendSpell": "its bidirectional LSTM encoder steps through the frames in a "
    "Python loop, which torch.export and ONNX trace at one fixed length",
    "MultiTaskModel": "an artifact holds one task",
}


def family_of(architecture: str, format: str) -> ModelFamily:
    """The family of the task class named ``architecture``, checked against ``format``.

    Raises:
      ArtifactError: one line naming the model, why, and the formats that do work.
    """
    family = FAMILIES.get(architecture)
    if family is None:
        why = NOT_EXPORTED.get(architecture, "no export mapping for it")
        supported = ", ".join(sorted(FAMILIES))
        raise ArtifactError(
            f"seqlab export cannot export {architecture} ({why}); it exports {supported} "
            "(docs/export.md lists family x format)"
        )
    if format not in family.formats:
        why = WHY_NOT.get((architecture, format), "not supported")
        raise ArtifactError(
            f"--format {format} cannot express {architecture} ({why}); use --format "
            f"{' or '.join(family.formats)}"
        )
    return family
