"""RNMT+ and the hybrid: training lowers the loss, incremental decoding equals teacher forcing,
beam search decodes, and the CLI inspects the presets."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.core.nested_map import NestedMap
from seqlab.core.registry import get_experiment
from seqlab.data.mt_data import MTExamples, collate
from seqlab.data.sentencepiece_tokenizer import EOS_ID
from seqlab.models.mt.rnmt_model import RNMTPlusMT

TINY = ["mt.bible_en_es.rnmt_tiny", "mt.bible_en_es.hybrid_tiny"]


def tiny_task(name: str) -> RNMTPlusMT:
    torch.manual_seed(0)
    task = get_experiment(name).task.build()
    task.eval()
    return task


def batch_of(rows: list[list[int]], targets: list[list[int]]) -> NestedMap:
    examples = MTExamples(
        source_ids=[r + [EOS_ID] for r in rows],
        target_ids=targets,
        source_text=["s"] * len(rows),
        target_text=["t"] * len(rows),
    )
    return collate(examples, list(range(len(rows))))


@pytest.mark.parametrize("name", TINY)
def test_encoder_is_the_configured_kind(name: str) -> None:
    task = tiny_task(name)
    expected = "TransformerEncoder" if "hybrid" in name else "BidirectionalLSTMStack"
    assert type(task.encoder).__name__ == expected
    assert (task.source_positions is not None) == ("hybrid" in name)


@pytest.mark.parametrize("name", TINY)
def test_extend_step_matches_teacher_forced_logits(name: str) -> None:
    task = tiny_task(name)
    batch = batch_of([[10, 11, 12, 13], [20, 21]], [[5, 6, 7, 8, 9], [30, 31, 32]])
    with torch.no_grad():
        full = torch.log_softmax(task.compute_predictions(batch).logits, dim=-1)
        encoded = task.encode(batch.src_ids, batch.src_paddings)
        state = task.init_decoder_state(encoded, batch.src_paddings, batch.tgt_in_ids.shape[1])
        for t in range(batch.tgt_in_ids.shape[1]):
            log_probs, state, attention = task.extend_step(state, batch.tgt_in_ids[:, t])
            real = batch.tgt_paddings[:, t] == 0
            torch.testing.assert_close(log_probs[real], full[real, t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(attention.sum(-1), torch.ones(2))
            assert torch.all(attention[1, 3:] == 0)  # padded source positions of example 1


@pytest.mark.parametrize("name", TINY)
def test_loss_decreases_over_a_few_steps(name: str) -> None:
    config = get_experiment(name)
    torch.manual_seed(0)
    task = config.task.build()
    task.train()
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(4, 1000, (n,), generator=generator).tolist() for n in (6, 9, 4, 7)]
    batch = batch_of(rows, [r[::-1] for r in rows])
    optimizer = torch.optim.Adam(task.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, metrics = task.compute_loss(batch, task.compute_predictions(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        assert metrics["num_target_tokens"][0] == sum(len(r) + 1 for r in rows)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", TINY)
def test_beam_search_decode_and_alignment(name: str) -> None:
    task = tiny_task(name)
    batch = batch_of([[10, 11, 12, 13], [20, 21], [30, 31, 32]], [[5, 6], [6], [7]])
    out = task.decode(batch)
    assert len(out.ids) == 3 and out.scores.shape == (3,)
    for ids, source_length in zip(out.ids, (5, 3, 4), strict=True):
        assert len(ids) <= 2 * source_length + 10
        assert EOS_ID not in ids
    probs = task.alignment(batch)
    assert probs.shape == (3, 5)  # BOS + 2 target tokens, 4 source tokens + EOS
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


@pytest.mark.parametrize("name", TINY)
def test_beam_search_with_per_example_source_equals_per_beam(
    name: str, search_per_example_and_per_beam
) -> None:
    task = tiny_task(name)
    batch = batch_of([[10, 11, 12, 13], [20, 21], [30, 31, 32]], [[5], [6], [7]])
    per_example, per_beam = search_per_example_and_per_beam(task, batch)
    assert per_example.ids == per_beam.ids
    torch.testing.assert_close(per_example.scores, per_beam.scores, atol=1e-6, rtol=1e-5)


def test_dimension_mismatch_names_the_key() -> None:
    config = get_experiment("mt.bible_en_es.rnmt_tiny").task
    config.decoder.attention.source_dim = 32
    with pytest.raises(ConfigError, match="decoder.attention.source_dim is 32 but must be 64"):
        config.build()
    hybrid = get_experiment("mt.bible_en_es.hybrid_tiny").task
    hybrid.source_positions = None
    with pytest.raises(ConfigError, match="needs source_positions"):
        hybrid.build()


def test_cli_inspect() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqlab.cli",
            "inspect",
            "--experiment",
            "mt.bible_en_es.rnmt_small",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "task.decoder.attention.num_heads = 4" in out
    assert "task.decoder.first_layer.gate_layer_norm = True" in out
    assert "task.encoder.cls = 'BidirectionalLSTMStack'" in out
    assert "# model analysis" in out
