"""What every encoder-decoder translation model shares: loss, beam-search decoding, BLEU.

A model subclasses :class:`TranslationTask` and provides the network: ``compute_predictions``
(teacher-forced logits), ``encode``, ``init_decoder_state``, ``max_output_length`` and the
beam search's IncrementalModel methods (``extend_step``, ``expand_state``,
``reorder_state``). Everything the runners call after the network is here, so the
Transformer and RNMT+ models score, decode and report the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sacrebleu
import torch

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID
from seqlab.decoding.beam_search import BeamSearch
from seqlab.layers.cross_entropy import LabelSmoothedCrossEntropy
from seqlab.models.base import Metrics, Task


class TranslationTask(Task):
    """Teacher-forced label-smoothed loss, beam-search decode, BLEU and chrF."""

    @dataclasses.dataclass
    class Config(Task.Config):
        loss: LabelSmoothedCrossEntropy.Config = param(
            LabelSmoothedCrossEntropy.Config(), doc="Training loss."
        )
        beam_search: BeamSearch.Config = param(BeamSearch.Config(), doc="Decoding.")
        start_id: int = param(
            BOS_ID,
            doc="First decoder input: BOS, or a target-language tag piece that tells a shared "
            "multilingual decoder which language to produce (Johnson et al. 2017).",
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.loss = config.loss.build()

    # ---- what a model provides ----------------------------------------------------------------
    def encode(self, src_ids: torch.Tensor, src_paddings: torch.Tensor) -> torch.Tensor:
        """[B, S] ids, [B, S] paddings -> [B, S, D] encoder outputs."""
        raise NotImplementedError

    def init_decoder_state(
        self, encoded: torch.Tensor, src_paddings: torch.Tensor, max_length: int
    ) -> NestedMap:
        """The decoder state for up to ``max_length`` ``extend_step`` calls of B rows."""
        raise NotImplementedError

    def max_output_length(self) -> int:
        """Hard cap on the output tokens of a hypothesis, EOS not counted."""
        raise NotImplementedError

    def extend_step(
        self, state: NestedMap, ids: torch.Tensor, return_attention: bool | None = None
    ) -> tuple[torch.Tensor, NestedMap, torch.Tensor | None]:
        """[N] last ids -> ([N, V] next-token log-probs, state, [N, S] attention or None)."""
        raise NotImplementedError

    # ---- data -----------------------------------------------------------------------------------
    def bind_data(self, data: Any) -> None:
        """Binds the data; a ``start_id`` other than BOS must be a user-defined piece."""
        super().bind_data(data)
        start_id, tokenizer = self.config.start_id, data.tokenizer
        if start_id == BOS_ID:
            return
        symbols = tokenizer.config.user_defined_symbols
        piece = tokenizer.processor.id_to_piece(start_id) if start_id < tokenizer.vocab_size else ""
        if piece not in symbols:
            raise ConfigError(
                f"start_id = {start_id} is {piece or 'outside the vocabulary'!r}, not one of the "
                f"tokenizer's user_defined_symbols {symbols} (ids 4, 5, ... in that order)"
            )

    def _decoder_inputs(self, batch: NestedMap) -> torch.Tensor:
        """[B, T] teacher-forced decoder inputs: ``tgt_in_ids`` starting with ``start_id``."""
        if self.config.start_id == BOS_ID:
            return batch.tgt_in_ids
        ids = batch.tgt_in_ids.clone()
        ids[:, 0] = self.config.start_id
        return ids

    # ---- loss -----------------------------------------------------------------------------------
    def compute_loss(
        self, batch: NestedMap, predictions: NestedMap
    ) -> tuple[torch.Tensor, Metrics]:
        out = self.loss(predictions.logits, batch.tgt_out_ids, batch.tgt_paddings)
        num_tokens = float(out.num_tokens)
        log_pplx = float(out.nll_sum.detach()) / max(num_tokens, 1.0)
        metrics = {
            "loss": (float(out.loss.detach()), num_tokens),
            "log_pplx": (log_pplx, num_tokens),
            "num_target_tokens": (num_tokens, 1.0),
        }
        return out.loss, metrics

    # ---- decoding -------------------------------------------------------------------------------
    def decode(self, batch: NestedMap) -> NestedMap:
        """Beam search.

        Returns:
          NestedMap(ids: list of B hypothesis id lists, scores [B]).
        """
        search = self.config.beam_search.build()
        encoded = self.encode(batch.src_ids, batch.src_paddings)
        source_lengths = (1.0 - batch.src_paddings).sum(dim=1).long()
        hard_cap = self.max_output_length()
        num_steps = int(search.max_lengths(source_lengths, hard_cap).max()) + 1
        state = self.init_decoder_state(encoded, batch.src_paddings, num_steps)
        result = search.search(
            self,
            state,
            bos_id=self.config.start_id,
            eos_id=EOS_ID,
            batch_size=batch.src_ids.shape[0],
            source_lengths=source_lengths,
            max_length=hard_cap,
        )
        return NestedMap(ids=result.best_ids, scores=result.best_scores)

    @torch.no_grad()
    def alignment(self, batch: NestedMap) -> torch.Tensor:
        """Source attention of the first example's reference, [T, S] (for images)."""
        src_ids, src_paddings = batch.src_ids[:1], batch.src_paddings[:1]
        source_length = int((1.0 - src_paddings).sum())
        target = self._decoder_inputs(batch)[0][batch.tgt_paddings[0] == 0]
        was_training = self.training
        self.eval()
        state = self.init_decoder_state(
            self.encode(src_ids, src_paddings), src_paddings, len(target)
        )
        rows = []
        for token in target:
            _, state, attention = self.extend_step(state, token.view(1), return_attention=True)
            rows.append(attention[0, :source_length])
        self.train(was_training)
        return torch.stack(rows)

    # ---- results and metrics --------------------------------------------------------------------
    def process_decode_out(self, batch: NestedMap, decode_out: NestedMap) -> list[dict[str, Any]]:
        tokenizer = self.data.tokenizer
        return [
            {
                "source": source,
                "hypothesis": tokenizer.decode(ids),
                "reference": reference,
                "score": float(score),
            }
            for source, reference, ids, score in zip(
                batch.src_text, batch.tgt_text, decode_out.ids, decode_out.scores, strict=True
            )
        ]

    def decode_metrics(self, results: list[dict[str, Any]]) -> dict[str, float | str]:
        """Corpus BLEU and chrF2 (sacrebleu, default 13a tokenization) with signatures."""
        hypotheses = [r["hypothesis"] for r in results]
        references = [[r["reference"] for r in results]]
        bleu = sacrebleu.metrics.BLEU()
        chrf = sacrebleu.metrics.CHRF()
        bleu_score = bleu.corpus_score(hypotheses, references)
        chrf_score = chrf.corpus_score(hypotheses, references)
        return {
            "bleu": bleu_score.score,
            "chrf": chrf_score.score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "num_sentences": float(len(results)),
        }
