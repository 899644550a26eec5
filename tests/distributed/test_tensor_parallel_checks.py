"""What tensor parallelism refuses before any process starts, with the key at fault."""

from __future__ import annotations

import pytest

from seqlab.core.config import ConfigError
from seqlab.distributed.tensor_parallel import check_tensor_parallel
from seqlab.experiments.mt.bible_en_es import transformer_tiny, with_positions
from seqlab.layers.attention_positions import (
    RotaryPositions,
    ShawRelativePositions,
    T5RelativeBias,
)


def test_heads_widths_and_vocabulary_must_divide_by_the_degree() -> None:
    task = transformer_tiny().task  # 2 heads, feed-forward width 128, 1000 pieces
    check_tensor_parallel(task, 2)
    task.embedding.vocab_size = 1001
    with pytest.raises(ConfigError, match=r"task\.embedding\.vocab_size=1001 is not divisible"):
        check_tensor_parallel(task, 2)
    task.embedding.vocab_size = 1000
    with pytest.raises(ConfigError, match=r"task\.encoder\.layer\.self_attention\.num_heads=2 "):
        check_tensor_parallel(task, 4)
    task.decoder.layer.ffn.hidden_dim = 129
    with pytest.raises(ConfigError, match=r"task\.decoder\.layer\.ffn\.hidden_dim=129 "):
        check_tensor_parallel(task, 2)


def test_rotary_positions_split_and_positions_with_weights_are_refused() -> None:
    check_tensor_parallel(
        with_positions(transformer_tiny(), "none", RotaryPositions.Config()).task, 2
    )
    for positions in (ShawRelativePositions.Config(), T5RelativeBias.Config()):
        task = with_positions(transformer_tiny(), "none", positions).task
        with pytest.raises(ConfigError, match="attention positions with weights"):
            check_tensor_parallel(task, 2)
