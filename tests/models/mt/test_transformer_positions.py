"""TransformerMT with each choice of absolute and relative positions."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import Config, ConfigError
from seqlab.data.mt_data import MTExamples, collate
from seqlab.experiments.mt.bible_en_es import transformer_tiny, with_positions
from seqlab.layers.attention_positions import (
    AttentionPositions,
    RotaryPositions,
    ShawRelativePositions,
    T5RelativeBias,
)
from seqlab.layers.embedding import LearnedPositions
from seqlab.models.mt.transformer_model import TransformerMT

VARIANTS: dict[str, tuple[str, AttentionPositions.Config | None]] = {
    "learned": ("learned", None),
    "sinusoidal_rotary": ("sinusoidal", RotaryPositions.Config()),
    "rotary": ("none", RotaryPositions.Config()),
    "shaw": ("none", ShawRelativePositions.Config(max_distance=4)),
    "t5": ("none", T5RelativeBias.Config(num_buckets=16, max_distance=32)),
}


def _config(variant: str) -> TransformerMT.Config:
    absolute, relative = VARIANTS[variant]
    return with_positions(transformer_tiny(), absolute, relative).task  # type: ignore[arg-type]


def _task(variant: str) -> TransformerMT:
    torch.manual_seed(0)
    return _config(variant).build()


def _batch():
    rows, targets = [[10, 11, 12, 13, 14, 15], [20, 21]], [[5, 6, 7, 8, 9, 4, 4], [30, 31, 32]]
    examples = MTExamples(
        source_ids=[r + [3] for r in rows],
        target_ids=targets,
        source_text=["s"] * 2,
        target_text=["t"] * 2,
    )
    return collate(examples, [0, 1])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_prints_and_round_trips(variant: str) -> None:
    config = _config(variant)
    absolute, relative = VARIANTS[variant]
    text = config.to_text()
    if absolute == "none":
        assert config.positions is None and "positions = None" in text.splitlines()
    if relative is not None:
        cls = type(relative).__qualname__.removesuffix(".Config")
        assert f"encoder.layer.self_attention.relative_positions.cls = '{cls}'" in text
        assert "decoder.layer.cross_attention.relative_positions = None" in text
    assert Config.from_dict(config.to_dict()).to_text() == text


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_extend_step_matches_teacher_forced_logits(variant: str) -> None:
    task = _task(variant).eval()
    batch = _batch()
    with torch.no_grad():
        full = torch.log_softmax(task.compute_predictions(batch).logits, dim=-1)
        encoded = task.encode(batch.src_ids, batch.src_paddings)
        state = task.decoder.init_state(encoded, batch.src_paddings, batch.tgt_in_ids.shape[1])
        for t in range(batch.tgt_in_ids.shape[1]):
            log_probs, state, _ = task.extend_step(state, batch.tgt_in_ids[:, t])
            real = batch.tgt_paddings[:, t] == 0
            torch.testing.assert_close(log_probs[real], full[real, t], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_padding_invariance(variant: str) -> None:
    # The second example decoded alone equals it decoded in a padded batch.
    task = _task(variant).eval()
    batch = _batch()
    with torch.no_grad():
        logits = task.compute_predictions(batch).logits
        alone = _batch()
        src_len = int((1 - batch.src_paddings[1]).sum())
        tgt_len = int((1 - batch.tgt_paddings[1]).sum())
        for key in ("src_ids", "src_paddings"):
            alone[key] = batch[key][1:, :src_len]
        for key in ("tgt_in_ids", "tgt_out_ids", "tgt_paddings"):
            alone[key] = batch[key][1:, :tgt_len]
        logits_alone = task.compute_predictions(alone).logits
    torch.testing.assert_close(logits_alone[0], logits[1, :tgt_len], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_reach_every_parameter_and_state_dict_round_trips(variant: str) -> None:
    task = _task(variant)
    batch = _batch()
    loss, _ = task.compute_loss(batch, task.compute_predictions(batch))
    loss.backward()
    for name, p in task.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if VARIANTS[variant][0] == "learned":
        assert isinstance(task.positions.config, LearnedPositions.Config)
    torch.manual_seed(1)
    other = task.config.build().eval()
    other.load_state_dict(task.state_dict())
    task.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            other.compute_predictions(batch).logits, task.compute_predictions(batch).logits
        )


@pytest.mark.parametrize("variant", ["learned", "rotary", "t5"])
def test_decode_stays_within_max_length(variant: str) -> None:
    task = _task(variant).eval()
    out = task.decode(_batch())
    assert len(out.ids) == 2 and out.scores.shape == (2,)
    search = task.config.beam_search
    for ids, source_length in zip(out.ids, (7, 3), strict=True):
        limit = search.max_decode_length_ratio * source_length + search.max_decode_length_offset
        assert len(ids) <= limit


def test_no_positions_at_all_is_an_error() -> None:
    config = _config("rotary")
    config.encoder.layer.self_attention.relative_positions = None
    with pytest.raises(ConfigError, match=r"encoder\.layer\.self_attention\.relative_positions"):
        config.build()
    config = _config("rotary")
    config.decoder.layer.self_attention.relative_positions = None
    with pytest.raises(ConfigError, match="leave the decoder without any position"):
        config.build()
