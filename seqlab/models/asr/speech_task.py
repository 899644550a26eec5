"""What every speech recognizer shares: the audio front, transcripts out, WER/CER scoring.

A model subclasses :class:`SpeechTask` and gets the log-mel front end, SpecAugment (active in
training only) and the 4x convolutional subsampling as ``featurize``, the language model to
fuse in decoding (``lm_fusion``, as ``fusion()``), plus the decode-result and metric methods
the runners call. Labels are the tokenizer's ids; id 0 (padding) never
occurs in a transcript, so a CTC model can use it as its blank.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.data.transcripts import labels_to_transcript
from seqlab.decoding.lm_fusion import LMFusion, label_map
from seqlab.layers.audio_frontend import LogMelFrontend
from seqlab.layers.conv_subsampling import ConvSubsampling
from seqlab.layers.spec_augment import SpecAugment
from seqlab.models.asr.error_rates import error_rates
from seqlab.models.base import Task


class SpeechTask(Task):
    """Audio front end and transcript scoring; subclasses add the encoder and decoder."""

    @dataclasses.dataclass
    class Config(Task.Config):
        frontend: LogMelFrontend.Config = param(LogMelFrontend.Config(), doc="Features.")
        spec_augment: SpecAugment.Config = param(
            SpecAugment.Config(), doc="Feature masking in training."
        )
        subsampling: ConvSubsampling.Config = param(
            ConvSubsampling.Config(), doc="4x time reduction and projection."
        )
        vocab_size: int = param(
            32, doc="Output labels V (the tokenizer's ids fit below it).", at_least=1
        )
        lm_fusion: LMFusion.Config = param(
            LMFusion.Config(), doc="Shallow fusion of a trained language model in decoding."
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        feature_dim = config.frontend.num_mel_bins * config.frontend.stack_frames
        if config.subsampling.input_dim != feature_dim:
            raise ConfigError(
                f"subsampling.input_dim ({config.subsampling.input_dim}) must equal "
                f"frontend.num_mel_bins * frontend.stack_frames ({feature_dim})"
            )
        self.frontend = config.frontend.build()
        self.spec_augment = config.spec_augment.build()
        self.subsampling = config.subsampling.build()
        self._fusion: LMFusion | None = None  # loaded on first use, not part of the model

    def featurize(
        self, audio: torch.Tensor, audio_paddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N] samples, [B, N] paddings -> ([B, T, D] subsampled frames, [B, T] paddings)."""
        features, paddings = self.frontend(audio, audio_paddings)
        features = self.spec_augment(features, paddings)
        return self.subsampling(features, paddings)

    def fusion(self) -> LMFusion | None:
        """The language model of ``lm_fusion`` on this model's device, loaded from its
        logdir on first use; None without ``lm_fusion.lm_logdir``.

        Raises:
          ConfigError: the logdir holds no language model, or its tokenizer has other
            pieces than this model's.
          LogdirError, CheckpointError: the logdir or its checkpoint is missing or broken.
        """
        config = self.config.lm_fusion
        if not config.lm_logdir:
            return None
        if self._fusion is None:
            # Imported here: loading a run needs the runners, which import the models.
            from seqlab.export.predictor import Predictor
            from seqlab.models.lm.language_model import LanguageModel

            run = Predictor.from_logdir(
                Path(config.lm_logdir),
                device=next(self.parameters()).device,
                checkpoint=config.checkpoint,
            )
            lm = run.context.task
            if not isinstance(lm, LanguageModel):
                raise ConfigError(
                    f"task.lm_fusion.lm_logdir={config.lm_logdir} holds a "
                    f"{type(lm).__name__} run; it must be a language model (an lm.* experiment)"
                )
            labels = label_map(
                self.data.tokenizer, run.context.data.tokenizer, self.config.vocab_size
            )
            self._fusion = config.build(lm, labels)
        return self._fusion

    def bind_data(self, data: Any) -> None:
        """Checks that every token of the data's tokenizer has an output label."""
        super().bind_data(data)
        size = getattr(data.tokenizer, "vocab_size", 0)
        if size > self.config.vocab_size:
            raise ConfigError(
                f"the tokenizer has {size} tokens but task.vocab_size is "
                f"{self.config.vocab_size}; raise task.vocab_size or lower "
                "data.tokenizer.vocab_size"
            )

    def process_decode_out(self, batch: NestedMap, decode_out: NestedMap) -> list[dict[str, Any]]:
        """One ``{id, hypothesis, reference}`` per utterance (``decode_out.ids``: label lists)."""
        tokenizer = self.data.tokenizer
        return [
            {
                "id": utterance_id,
                "hypothesis": labels_to_transcript(tokenizer, ids),
                "reference": reference,
            }
            for utterance_id, reference, ids in zip(
                batch.ids, batch.tgt_text, decode_out.ids, strict=True
            )
        ]

    def decode_metrics(self, results: list[dict[str, Any]]) -> dict[str, float | str]:
        """Corpus WER and CER (percent) after ``seqlab.data.transcripts`` normalization."""
        metrics: dict[str, float | str] = dict(
            error_rates([r["reference"] for r in results], [r["hypothesis"] for r in results])
        )
        metrics["num_utterances"] = float(len(results))
        return metrics
