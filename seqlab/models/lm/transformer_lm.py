"""A decoder-only Transformer language model (Radford et al. 2018; Vaswani et al. 2017).

The stack is ``TransformerEncoder`` run causally: its layers have no cross-attention. On a
packed batch the self-attention mask is block-diagonal and causal (a token sees only the
earlier tokens of its own segment) and absolute positions restart at every segment, so a
packed row computes exactly what its segments would compute alone. The output projection
shares the embedding matrix.
"""

from __future__ import annotations

import dataclasses

import torch

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.layers.dropout import Dropout
from seqlab.layers.embedding import AbsolutePositions, SinusoidalPositions, TokenEmbedding
from seqlab.layers.transformer import TransformerEncoder
from seqlab.models.lm.language_model import LanguageModel


class TransformerLM(LanguageModel):
    """Embedding plus positions, a causal Transformer stack, tied output projection."""

    @dataclasses.dataclass
    class Config(LanguageModel.Config):
        embedding: TokenEmbedding.Config = param(
            TokenEmbedding.Config(), doc="Token embedding, shared with the output projection."
        )
        positions: AbsolutePositions.Config | None = param(
            SinusoidalPositions.Config(),
            doc="Absolute positions added to the embeddings (restarting at each packed "
            "segment), or None when self-attention has relative_positions.",
        )
        input_dropout_prob: float = param(
            0.1, doc="Dropout on embeddings plus positions.", at_least=0, below=1
        )
        stack: TransformerEncoder.Config = param(
            TransformerEncoder.Config(), doc="The layers, run with causal self-attention."
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self_attention = config.stack.layer.self_attention
        if config.positions is None and self_attention.relative_positions is None:
            raise ConfigError(
                "positions = None and stack.layer.self_attention.relative_positions = None "
                "leave the model without any position information; set one of them"
            )
        if config.embedding.model_dim != config.stack.layer.model_dim:
            raise ConfigError(
                f"embedding.model_dim ({config.embedding.model_dim}) differs from "
                f"stack.layer.model_dim ({config.stack.layer.model_dim}); set both the same"
            )
        self.embedding = config.embedding.build()
        self.positions = None if config.positions is None else config.positions.build()
        self.input_dropout = Dropout(config.input_dropout_prob)
        self.stack = config.stack.build()

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[B, T] ids at [B, T] positions -> [B, T, D] embeddings plus positions."""
        x = self.embedding(ids)
        if self.positions is not None:
            table = self.positions(int(positions.max()) + 1)
            x = x + table[positions].to(x.dtype)
        return self.input_dropout(x)

    def compute_logits(self, batch: NestedMap) -> torch.Tensor:
        x = self._embed(batch.ids, batch.segment_positions)
        x = self.stack(x, batch.paddings, causal=True, segment_ids=batch.segment_ids)
        return self.embedding.logits(x)

    # ---- incremental decoding -----------------------------------------------------------------
    def init_state(self, batch_size: int, max_length: int) -> NestedMap:
        """Key/value caches [B, L, H, M, Dh] of the L layers for M = ``max_length`` steps."""
        attention = self.stack.layers[0].self_attention
        shape = (batch_size, len(self.stack.layers), attention.num_heads, max_length)
        weight = self.embedding.weight
        return NestedMap(
            step=0,
            key=weight.new_zeros(shape + (attention.head_dim,)),
            value=weight.new_zeros(shape + (attention.head_dim,)),
        )

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        """Rows ``indices`` [M] of the state; only the filled cache positions (< step) are
        copied, the rest of the new caches is left uninitialised (never read before written)."""
        step = state.step
        out = NestedMap(step=step)
        for name in ("key", "value"):
            cache = state[name]
            out[name] = cache.new_empty((indices.shape[0], *cache.shape[1:]))
            torch.index_select(cache[:, :, :, :step], 0, indices, out=out[name][:, :, :, :step])
        return out

    def concat_states(self, states: list[NestedMap]) -> NestedMap:
        """The rows of ``states`` (all at one step) in one state, copying only the filled
        cache positions."""
        step = states[0].step
        if any(state.step != step for state in states):
            raise ValueError(f"concat_states: states at steps {[s.step for s in states]}")
        out = NestedMap(step=step)
        for name in ("key", "value"):
            caches = [state[name] for state in states]
            out[name] = caches[0].new_empty((sum(c.shape[0] for c in caches), *caches[0].shape[1:]))
            torch.cat([c[:, :, :, :step] for c in caches], out=out[name][:, :, :, :step])
        return out

    def extend_step(
        self, state: NestedMap, ids: torch.Tensor
    ) -> tuple[torch.Tensor, NestedMap, None]:
        """Feeds ids [N] at position ``state.step``; returns next-token log-probs [N, V]."""
        step = state.step
        if step >= state.key.shape[3]:
            raise ValueError(
                f"extend_step at step {step} but init_state made room for {state.key.shape[3]}"
            )
        x = self.embedding(ids[:, None])
        if self.positions is not None:
            # The table row of ``step`` alone: the same values as ``_embed``, and an int step
            # keeps the step traceable by torch.export (no data-dependent table length).
            x = x + self.positions(1, step)[None].to(x.dtype)
        x = self.input_dropout(x)
        for i, layer in enumerate(self.stack.layers):
            x = layer.extend_step(x, state.key[:, i], state.value[:, i], step)
        if self.stack.final_norm is not None:
            x = self.stack.final_norm(x)
        state.step = step + 1
        return torch.log_softmax(self.embedding.logits(x[:, 0]).float(), dim=-1), state, None
