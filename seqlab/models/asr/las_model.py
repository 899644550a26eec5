"""Listen, Attend and Spell (Chan et al. 2016) with the RNMT+ attention decoder.

Listen: the log-mel front end, SpecAugment and 4x convolutional subsampling (from
:class:`SpeechTask`), then a bidirectional LSTM stack. Attend and spell: an LSTM decoder whose
first layer queries a multi-head additive attention over the encoder outputs, the context
feeding the upper layers and the softmax (:class:`RNMTDecoder`), over graphemes or
SentencePiece pieces. Trained with teacher forcing and label smoothing; decoded with the
shared beam search.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import lengths_to_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID, PAD_ID
from seqlab.decoding.beam_search import BeamSearch
from seqlab.decoding.ctc_prefix_scorer import CtcPrefixScorer
from seqlab.decoding.fused_model import FusedModel, StepScorer
from seqlab.decoding.step_model import IncrementalModel
from seqlab.layers.cross_entropy import LabelSmoothedCrossEntropy
from seqlab.layers.dropout import Dropout
from seqlab.layers.embedding import TokenEmbedding
from seqlab.layers.rnn import BidirectionalLSTMStack
from seqlab.models.asr.ctc_loss import BLANK_ID, ctc_loss
from seqlab.models.asr.speech_task import SpeechTask
from seqlab.models.base import Metrics
from seqlab.models.mt.rnmt_decoder import RNMTDecoder


def teacher_forcing_targets(
    tgt_ids: torch.Tensor, tgt_paddings: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoder inputs and outputs from transcript labels.

    Args:
      tgt_ids: [B, L] labels, padded with PAD_ID.
      tgt_paddings: [B, L], 1.0 = pad.

    Returns:
      (inputs [B, L + 1] = BOS + labels, outputs [B, L + 1] = labels + EOS, paddings
      [B, L + 1]).
    """
    lengths = (1.0 - tgt_paddings).sum(dim=1).round().long()
    batch = tgt_ids.shape[0]
    column = tgt_ids.new_full((batch, 1), PAD_ID)
    inputs = torch.cat([torch.full_like(column, BOS_ID), tgt_ids], dim=1)
    outputs = torch.cat([tgt_ids, column], dim=1)
    outputs[torch.arange(batch), lengths] = EOS_ID
    return inputs, outputs, lengths_to_paddings(lengths + 1, inputs.shape[1])


class ListenAttendSpell(SpeechTask):
    """Audio -> conv front -> BiLSTM -> attention LSTM decoder; beam search; WER/CER."""

    @dataclasses.dataclass
    class Config(SpeechTask.Config):
        encoder: BidirectionalLSTMStack.Config = param(
            BidirectionalLSTMStack.Config(), doc="Listener: bidirectional LSTM layers."
        )
        embedding: TokenEmbedding.Config = param(
            TokenEmbedding.Config(), doc="Label embedding, shared with the output projection."
        )
        input_dropout_prob: float = param(
            0.1, doc="Dropout on the embedded decoder inputs.", at_least=0, below=1
        )
        decoder: RNMTDecoder.Config = param(RNMTDecoder.Config(), doc="Attention LSTM decoder.")
        loss: LabelSmoothedCrossEntropy.Config = param(
            LabelSmoothedCrossEntropy.Config(), doc="Training loss."
        )
        ctc_weight: float = param(
            0.0,
            doc="Joint CTC-attention training (Kim et al. 2017, ESPnet's mtlalpha): a CTC head "
            "on the listener's outputs, the loss (1 - w) * attention + w * CTC; 0 = none. "
            "Decoding uses the speller alone unless ctc_decode_weight > 0.",
            at_least=0,
            below=1,
        )
        ctc_decode_weight: float = param(
            0.0,
            doc="Joint CTC/attention decoding (Watanabe et al. 2017, ESPnet's decode "
            "ctc_weight): beam search scores a label by (1 - w) * log P_att + w * the change "
            "of the CTC head's prefix score; 0 = the speller alone. Needs ctc_weight > 0.",
            at_least=0,
            below=1,
        )
        beam_search: BeamSearch.Config = param(BeamSearch.Config(), doc="Decoding.")
        max_decode_length: int = param(
            400, doc="Hard cap on the output labels of a hypothesis (EOS not counted).", at_least=1
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        encoder_dim = 2 * (config.encoder.cell.projection_dim or config.encoder.cell.num_units)
        model_dim = config.embedding.model_dim
        for key, value, expected in (
            ("encoder.input_dim", config.encoder.input_dim, config.subsampling.output_dim),
            ("embedding.vocab_size", config.embedding.vocab_size, config.vocab_size),
            ("decoder.input_dim", config.decoder.input_dim, model_dim),
            ("decoder.output_dim", config.decoder.output_dim, model_dim),
            ("decoder.attention.source_dim", config.decoder.attention.source_dim, encoder_dim),
            ("decoder.attention.value_dim", config.decoder.attention.value_dim, encoder_dim),
        ):
            if value != expected:
                raise ConfigError(f"ListenAttendSpell: {key} is {value} but must be {expected}")
        self.encoder = config.encoder.build()
        self.embedding = config.embedding.build()
        self.input_dropout = Dropout(config.input_dropout_prob)
        self.decoder = config.decoder.build()
        self.loss = config.loss.build()
        # The CTC head exists only when it trains: runs without it keep their parameters.
        self.ctc_proj = nn.Linear(encoder_dim, config.vocab_size) if config.ctc_weight > 0 else None
        if config.ctc_decode_weight > 0 and self.ctc_proj is None:
            raise ConfigError(
                "ListenAttendSpell: ctc_decode_weight > 0 needs the CTC head that ctc_weight > 0 "
                "trains (this model has none)"
            )

    # ---- model ------------------------------------------------------------------------------
    def encode(
        self, audio: torch.Tensor, audio_paddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N] samples with [B, N] paddings -> ([B, S, E] encodings, [B, S] paddings)."""
        x, paddings = self.featurize(audio, audio_paddings)
        return self.encoder(x, paddings), paddings

    def compute_predictions(self, batch: NestedMap) -> NestedMap:
        """Teacher-forced logits, and the CTC head's frame logits when it trains.

        Returns:
          NestedMap(logits [B, L + 1, V], targets [B, L + 1] (labels + EOS), paddings), with
          ctc_logits [B, S, V] and encoded_paddings [B, S] when ``ctc_weight`` > 0.
        """
        encoded, encoded_paddings = self.encode(batch.audio, batch.audio_paddings)
        inputs, targets, paddings = teacher_forcing_targets(batch.tgt_ids, batch.tgt_paddings)
        embedded = self.input_dropout(self.embedding(inputs))
        decoded = self.decoder(embedded, paddings, encoded, encoded_paddings)
        out = NestedMap(logits=self.embedding.logits(decoded), targets=targets, paddings=paddings)
        if self.ctc_proj is not None:
            out.ctc_logits = self.ctc_proj(encoded)
            out.encoded_paddings = encoded_paddings
        return out

    def compute_loss(
        self, batch: NestedMap, predictions: NestedMap
    ) -> tuple[torch.Tensor, Metrics]:
        """Label-smoothed cross-entropy per label (EOS included), mixed with CTC per label when
        ``ctc_weight`` > 0 (``attention_loss`` and ``ctc_loss`` are then reported apart)."""
        out = self.loss(predictions.logits, predictions.targets, predictions.paddings)
        num_tokens = float(out.num_tokens)
        loss = out.loss
        metrics = {
            "log_pplx": (float(out.nll_sum.detach()) / max(num_tokens, 1.0), num_tokens),
            "num_target_tokens": (num_tokens - batch.tgt_ids.shape[0], 1.0),
        }
        if self.ctc_proj is not None:
            ctc = ctc_loss(
                predictions.ctc_logits,
                predictions.encoded_paddings,
                batch.tgt_ids,
                batch.tgt_paddings,
            )
            weight = self.config.ctc_weight
            loss = (1.0 - weight) * out.loss + weight * ctc.per_token
            labels = float(ctc.target_lengths.sum())
            metrics["attention_loss"] = (float(out.loss.detach()), num_tokens)
            metrics["ctc_loss"] = (float(ctc.per_token.detach()), labels)
        return loss, {"loss": (float(loss.detach()), num_tokens), **metrics}

    # ---- incremental decoding (the beam search's IncrementalModel) -----------------------------
    def extend_step(
        self, state: NestedMap, ids: torch.Tensor, return_attention: bool | None = None
    ) -> tuple[torch.Tensor, NestedMap, torch.Tensor | None]:
        """[N] last ids -> ([N, V] next-label log-probs, state, [N, S] attention probs)."""
        out, state, attention = self.decoder.extend_step(state, self.embedding(ids))
        log_probs = torch.log_softmax(self.embedding.logits(out).float(), dim=-1)
        return log_probs, state, attention

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return self.decoder.expand_state(state, beam_size)

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        return self.decoder.reorder_state(state, indices)

    def select_examples(self, state: NestedMap, examples: torch.Tensor) -> NestedMap:
        return self.decoder.select_examples(state, examples)

    def decode(self, batch: NestedMap) -> NestedMap:
        """Beam search, jointly with the CTC head when ``ctc_decode_weight`` > 0 and with the
        fused language model of ``lm_fusion`` if any; output lengths are capped relative to
        the encoder frames.

        Returns:
          NestedMap(ids: B label lists, scores [B]).
        """
        encoded, paddings = self.encode(batch.audio, batch.audio_paddings)
        frames = (1.0 - paddings).sum(dim=1).round().long()
        search = self.config.beam_search.build()
        max_length, batch_size = self.config.max_decode_length, encoded.shape[0]
        model: IncrementalModel = self
        state = self.decoder.init_state(encoded, paddings)
        scorers: list[StepScorer] = []
        scorer_states: list[NestedMap] = []
        ctc_weight = self.config.ctc_decode_weight
        if ctc_weight > 0:
            assert self.ctc_proj is not None
            ctc = CtcPrefixScorer(ctc_weight, BLANK_ID, EOS_ID, never_ids=(BOS_ID,))
            scorers.append(ctc)
            log_probs = torch.log_softmax(self.ctc_proj(encoded).float(), dim=-1)
            scorer_states.append(ctc.init_state(log_probs, paddings))
        fusion = self.fusion()
        if fusion is not None:
            longest = int(search.max_lengths(frames, max_length).max()) + 1  # and EOS
            scorers.append(fusion)
            scorer_states.append(fusion.init_state(batch_size, longest))
        bonus = 0.0 if fusion is None else fusion.length_bonus
        if scorers:
            fused = FusedModel(self, scorers, model_weight=1.0 - ctc_weight, length_bonus=bonus)
            model, state = fused, fused.initial_state(state, scorer_states)
        result = search.search(
            model,
            state,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            batch_size=batch_size,
            source_lengths=frames,
            max_length=max_length,
            max_step_gain=bonus,
        )
        return NestedMap(ids=result.best_ids, scores=result.best_scores)
