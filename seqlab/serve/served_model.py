"""The model behind ``seqlab serve``: one predictor (a logdir's or an artifact's), what its
requests look like, how each is checked and what it costs in a batch."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import torch

from seqlab.export.input_limits import InputTooLargeError, check_input_lengths
from seqlab.export.input_text import check_plain_text

TRANSLATE = "translate"
GENERATE = "generate"
TRANSCRIBE = "transcribe"

# A speech request's cost in a batch: its 10 ms feature frames.
FRAMES_PER_SECOND = 100


class RequestError(ValueError):
    """A request the model cannot take; the message says why in one line (an HTTP 4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Prepared:
    """A checked request: the predictor's input and its cost in the batch's budget."""

    item: str | np.ndarray
    cost: int
    attention: bool = False


class ServedModel:
    """Wraps a ``Predictor`` or an ``ArtifactPredictor`` for the server.

    ``task`` is the endpoint it answers (translate, generate or transcribe), ``batches``
    whether requests may share a batch: not for a language model that samples, whose draws
    for one prompt depend on the other prompts of its batch.
    """

    def __init__(self, predictor: Any) -> None:
        """``predictor``: a ``Predictor`` (a training logdir) or an ``ArtifactPredictor``."""
        self.predictor = predictor
        self.description = _describe(predictor)
        self.task: str = self.description["task"]
        self.batches = not (self.task == GENERATE and _sampling_temperature(predictor) > 0)

    # ---- requests ------------------------------------------------------------------------------
    @property
    def max_batch_size(self) -> int:
        return int(self.predictor.max_batch_size)

    @property
    def input_key(self) -> str:
        """The request's JSON key: ``audio`` (base64 of an audio file) or ``text``."""
        return "audio" if self.task == TRANSCRIBE else "text"

    def prepare(self, request: Any) -> Prepared:
        """Checks a decoded JSON request body and returns its input and cost.

        Raises:
          RequestError: not an object, an unknown or missing key, a wrong type, empty input,
            a control character, too many tokens, base64 or audio that does not decode.
        """
        if not isinstance(request, dict):
            raise RequestError(f"the body must be a JSON object, got {_json_type(request)}")
        key = self.input_key
        allowed = {key, "attention"} if self.task == TRANSLATE else {key}
        unknown = sorted(set(request) - allowed)
        if unknown:
            raise RequestError(
                f"unknown key {unknown[0]!r}; this endpoint takes {', '.join(sorted(allowed))}"
            )
        if key not in request:
            raise RequestError(f"missing key {key!r}")
        value = request[key]
        if not isinstance(value, str):
            raise RequestError(f"{key!r} must be a string, got {_json_type(value)}")
        attention = request.get("attention", False)
        if not isinstance(attention, bool):
            raise RequestError(f"'attention' must be true or false, got {_json_type(attention)}")
        if not value.strip():
            raise RequestError(f"{key!r} is empty")
        if attention and not self.shows_attention:
            raise RequestError(
                "this model cannot show its attention (a training logdir of a "
                "single-task translation model can)"
            )
        if self.task == TRANSCRIBE:
            waveform = self._decode_audio(value)
            return Prepared(waveform, max(1, len(waveform) * FRAMES_PER_SECOND // self.rate))
        try:
            check_plain_text([value])
            ids = self.tokenizer.encode_batch([value])
            check_input_lengths(ids, int(self.predictor.max_input_tokens))
        except InputTooLargeError as e:
            raise RequestError(str(e).replace("input 0", "the text", 1), status=413) from None
        except ValueError as e:
            raise RequestError(str(e).replace("input 0", "the text", 1)) from None
        return Prepared(value, len(ids[0]) + 1, attention)

    @property
    def tokenizer(self) -> Any:
        predictor = self.predictor
        return (
            predictor.tokenizer
            if hasattr(predictor, "tokenizer")
            else predictor.context.data.tokenizer
        )

    @property
    def rate(self) -> int:
        return int(self.predictor.sample_rate)

    def _decode_audio(self, text: str) -> np.ndarray:
        from seqlab.data.audio_files import AudioError, decode_audio

        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("'audio' is not base64 (the bytes of a WAV or FLAC file)") from None
        try:
            return decode_audio(data, self.rate, name="'audio'")
        except AudioError as e:
            raise RequestError(str(e)) from None

    # ---- decoding ------------------------------------------------------------------------------
    def run(self, items: list[str | np.ndarray]) -> list[str]:
        """Decodes prepared inputs together; one output per input, in order."""
        if self.task == TRANSCRIBE:
            return self.predictor.transcribe_waveforms(list(items))
        return self.predictor.predict([str(item) for item in items])

    @property
    def shows_attention(self) -> bool:
        """Whether ``attention`` works: a logdir's single-task translation model."""
        context = getattr(self.predictor, "context", None)
        task = getattr(context, "task", None)
        return hasattr(task, "alignment") and not self.predictor.task

    @torch.no_grad()
    def attention(self, text: str, output: str) -> dict[str, Any]:
        """The source attention of a translation model producing ``output`` from ``text``:
        {"source": pieces, "output": pieces, "weights": [len(output) + 1][len(source) + 1]}
        (EOS included, each row summing to 1).

        Only for a model that ``shows_attention`` (``prepare`` refuses the request otherwise).
        """
        from seqlab.data.mt_data import MTExamples

        assert self.shows_attention, "prepare() refuses attention requests this model cannot serve"
        context = self.predictor.context
        task = context.task
        tokenizer = self.tokenizer
        eos = tokenizer.processor.eos_id()
        source_ids, output_ids = tokenizer.encode_batch([text, output])
        examples = MTExamples(
            source_ids=[source_ids + [eos]],
            target_ids=[output_ids],  # collate adds BOS and EOS
            source_text=[text],
            target_text=[output],
        )
        batch = context.data.collate(examples, [0]).to(context.device)
        weights = task.alignment(batch)
        piece = tokenizer.processor.id_to_piece
        return {
            "source": [piece(i) for i in source_ids] + ["</s>"],
            "output": [piece(i) for i in output_ids] + ["</s>"],
            "weights": [[round(float(w), 4) for w in row] for row in weights.cpu()],
        }


def _describe(predictor: Any) -> dict[str, Any]:
    """What ``GET /v1/model`` reports: task, experiment, step, config digest, device, source."""
    from seqlab.export.model_families import LANGUAGE_MODEL

    if hasattr(predictor, "manifest"):  # an artifact
        manifest = predictor.manifest
        source = manifest.get("source", {})
        language_model = predictor.kind == LANGUAGE_MODEL
        return {
            "task": _task(predictor.is_speech, language_model),
            "experiment": source.get("experiment"),
            "architecture": manifest["model"].get("architecture"),
            "step": source.get("step"),
            "checkpoint": source.get("checkpoint"),
            "config_sha256": manifest.get("files", {}).get(manifest.get("config", "")),
            "device": str(predictor.device),
            "artifact": str(predictor.directory.resolve()),
            "format": manifest["format"],
            "quantize": manifest.get("quantize"),
        }
    from seqlab.models.lm.language_model import LanguageModel

    context = predictor.context
    config_text = json.dumps(context.config.to_dict(), indent=1, sort_keys=True) + "\n"
    return {
        "task": _task(predictor.is_speech, isinstance(context.task, LanguageModel)),
        "experiment": context.config.name,
        "architecture": type(context.task).__name__,
        "step": predictor.checkpoint_step,
        "checkpoint": str(predictor.checkpoint_path),
        # The sha256 of the config as config.json holds it (its --set changes included).
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "device": str(context.device),
        "logdir": str(context.logdir.resolve()),
    }


def _task(is_speech: bool, is_language_model: bool) -> str:
    return TRANSCRIBE if is_speech else GENERATE if is_language_model else TRANSLATE


def _sampling_temperature(predictor: Any) -> float:
    """A language model's sampling temperature (0 = greedy)."""
    sampler = getattr(predictor, "sampler", None)
    if sampler is not None:
        return float(sampler.config.temperature)
    return float(predictor.context.task.config.sampler.temperature)


def _json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
