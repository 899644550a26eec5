"""Conformer-CTC speech recognition: log-mel front end, SpecAugment, 4x convolutional
subsampling (from :class:`SpeechTask`), a Conformer encoder and a per-frame softmax trained
with CTC.

The CTC blank is label 0, the tokenizer's padding id, which never occurs in a transcript.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import apply_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.decoding.ctc import ctc_decode
from seqlab.layers.conformer import ConformerEncoder
from seqlab.layers.dropout import Dropout
from seqlab.layers.embedding import SinusoidalPositions
from seqlab.models.asr.ctc_loss import BLANK_ID, ctc_loss
from seqlab.models.asr.speech_task import SpeechTask
from seqlab.models.base import Metrics


class ConformerCtc(SpeechTask):
    """Audio -> Conformer encoder -> CTC over the tokenizer's labels; scored by WER/CER."""

    @dataclasses.dataclass
    class Config(SpeechTask.Config):
        positions: SinusoidalPositions.Config = param(
            SinusoidalPositions.Config(model_dim=144, max_length=4096),
            doc="Sinusoidal positions added after subsampling (max_length frames of 40 ms).",
        )
        scale_frames: bool = param(
            True,
            doc="Multiply the subsampled frames by sqrt(model_dim) before adding the positions "
            "(as ESPnet does), so that frames and positions start at the same scale.",
        )
        input_dropout_prob: float = param(
            0.1, doc="Dropout on the subsampled frames.", at_least=0, below=1
        )
        encoder: ConformerEncoder.Config = param(ConformerEncoder.Config(), doc="Encoder.")
        decoder: Literal["greedy", "beam"] = param(
            "beam", doc="CTC decoding: greedy best path or prefix beam search."
        )
        beam_size: int = param(8, doc="Prefixes kept by the beam search.", at_least=1)
        labels_per_frame: int = param(
            0, doc="Beam search considers only the top-k labels per frame (0 = all).", at_least=0
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        model_dim = config.encoder.layer.model_dim
        for key, value in (
            ("subsampling.output_dim", config.subsampling.output_dim),
            ("positions.model_dim", config.positions.model_dim),
        ):
            if value != model_dim:
                raise ConfigError(
                    f"{key} ({value}) must equal encoder.layer.model_dim ({model_dim})"
                )
        if config.lm_fusion.lm_logdir and config.decoder != "beam":
            raise ConfigError("task.lm_fusion.lm_logdir needs task.decoder=beam (prefix search)")
        self.positions = config.positions.build()
        self.frame_scale = math.sqrt(model_dim) if config.scale_frames else 1.0
        self.input_dropout = Dropout(config.input_dropout_prob)
        self.encoder = config.encoder.build()
        self.output_proj = nn.Linear(model_dim, config.vocab_size)

    # ---- model ------------------------------------------------------------------------------
    def encode(
        self, audio: torch.Tensor, audio_paddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N] samples with [B, N] paddings -> ([B, T, D] encodings, [B, T] paddings)."""
        x, paddings = self.featurize(audio, audio_paddings)
        # Subsampled frames start with a standard deviation of about 0.1, positions of 0.7:
        # unscaled, the encoder would see mostly positions (and sit on CTC's blank plateau).
        x = x * self.frame_scale + self.positions(x.shape[1]).to(x.dtype)[None]
        x = self.encoder(self.input_dropout(apply_paddings(x, paddings)), paddings)
        return x, paddings

    def compute_predictions(self, batch: NestedMap) -> NestedMap:
        """Returns NestedMap(logits [B, T, V], paddings [B, T])."""
        encoded, paddings = self.encode(batch.audio, batch.audio_paddings)
        return NestedMap(logits=self.output_proj(encoded), paddings=paddings)

    def compute_loss(
        self, batch: NestedMap, predictions: NestedMap
    ) -> tuple[torch.Tensor, Metrics]:
        """CTC loss per target token (utterances too short for their labels count zero)."""
        out = ctc_loss(predictions.logits, predictions.paddings, batch.tgt_ids, batch.tgt_paddings)
        num_tokens = float(out.target_lengths.sum())
        num_utterances = float(batch.tgt_ids.shape[0])
        loss, total, input_lengths = out.per_token, out.total, out.input_lengths
        metrics = {
            "loss": (float(loss.detach()), num_tokens),
            "ctc_loss_per_utterance": (float(total.detach()) / num_utterances, num_utterances),
            "num_target_tokens": (num_tokens, 1.0),
            "num_encoder_frames": (float(input_lengths.sum()), 1.0),
        }
        return loss, metrics

    # ---- decoding and metrics -----------------------------------------------------------------
    def frame_log_probs(
        self, audio: torch.Tensor, audio_paddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N] samples, [B, N] paddings -> ([B, T, V] float32 log-probs per frame, [B, T]
        paddings): what decoding searches (and what an exported artifact computes)."""
        encoded, paddings = self.encode(audio, audio_paddings)
        return torch.log_softmax(self.output_proj(encoded).float(), dim=-1), paddings

    def decode(self, batch: NestedMap) -> NestedMap:
        """Returns NestedMap(ids: B label lists)."""
        log_probs, paddings = self.frame_log_probs(batch.audio, batch.audio_paddings)
        c = self.config
        ids = ctc_decode(
            log_probs,
            paddings,
            c.decoder,
            c.beam_size,
            BLANK_ID,
            c.labels_per_frame,
            self.fusion(),
        )
        return NestedMap(ids=ids)
