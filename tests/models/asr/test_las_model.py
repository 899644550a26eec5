"""Listen-Attend-Spell: teacher-forcing targets, incremental decoding, end-to-end learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seqlab.core.registry import get_experiment
from seqlab.data.asr_data import batch_from_waveforms
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID, PAD_ID
from seqlab.models.asr.ctc_loss import ctc_loss
from seqlab.models.asr.las_model import teacher_forcing_targets
from seqlab.train.decode_runner import decode_dataset
from seqlab.train.trainer import Trainer


def test_teacher_forcing_targets() -> None:
    ids = torch.tensor([[5, 6, 7], [8, PAD_ID, PAD_ID]])
    paddings = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    inputs, outputs, out_paddings = teacher_forcing_targets(ids, paddings)
    assert inputs.tolist() == [[BOS_ID, 5, 6, 7], [BOS_ID, 8, PAD_ID, PAD_ID]]
    assert outputs.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert out_paddings.tolist() == [[0, 0, 0, 0], [0, 0, 1, 1]]


def test_extend_step_equals_teacher_forced_forward() -> None:
    torch.manual_seed(0)
    task = get_experiment("asr.flite_bible.las_tiny").task.build().eval()
    rng = np.random.default_rng(0)
    waveforms = [rng.normal(0, 0.1, n).astype(np.float32) for n in (9000, 6000)]
    labels = [[5, 9, 12, 7], [6, 6]]
    batch = batch_from_waveforms(waveforms, labels, ["a", "b"], ["a", "b"], [0, 1], 16000)
    with torch.no_grad():
        full = torch.log_softmax(task.compute_predictions(batch).logits, dim=-1)
        encoded, paddings = task.encode(batch.audio, batch.audio_paddings)
        state = task.decoder.init_state(encoded, paddings)
        inputs, _, _ = teacher_forcing_targets(batch.tgt_ids, batch.tgt_paddings)
        for step in range(inputs.shape[1]):
            log_probs, state, _ = task.extend_step(state, inputs[:, step])
            for row, n in enumerate((4, 2)):
                if step <= n:
                    torch.testing.assert_close(log_probs[row], full[row, step], atol=1e-4, rtol=0)


def test_joint_ctc_attention_loss_mixes_both_and_trains_the_listener() -> None:
    rng = np.random.default_rng(0)
    waveforms = [rng.normal(0, 0.1, n).astype(np.float32) for n in (9000, 6000)]
    batch = batch_from_waveforms(
        waveforms, [[5, 9, 12, 7], [6, 6]], ["a", "b"], ["a", "b"], [0, 1], 16000
    )
    plain = get_experiment("asr.flite_bible.las_tiny").task
    torch.manual_seed(0)
    without = plain.build().eval()
    assert without.ctc_proj is None  # a run without the CTC head keeps its parameters
    joint = get_experiment("asr.flite_bible.las_tiny").task
    joint.ctc_weight = 0.3
    torch.manual_seed(0)
    task = joint.build().eval()
    extra = {n for n, _ in task.named_parameters()} - {n for n, _ in without.named_parameters()}
    assert extra == {"ctc_proj.weight", "ctc_proj.bias"}
    predictions = task.compute_predictions(batch)
    loss, metrics = task.compute_loss(batch, predictions)
    ctc = ctc_loss(
        predictions.ctc_logits, predictions.encoded_paddings, batch.tgt_ids, batch.tgt_paddings
    )
    attention = metrics["attention_loss"][0]
    assert metrics["ctc_loss"][0] == pytest.approx(float(ctc.per_token.detach()), rel=1e-6)
    assert float(loss) == pytest.approx(
        0.7 * attention + 0.3 * float(ctc.per_token.detach()), rel=1e-5
    )
    # The speller and the CTC head give the listener gradient; without audio-dependent CTC
    # the listener's first layer would learn only through attention.
    loss.backward()
    assert task.ctc_proj.weight.grad is not None and task.ctc_proj.weight.grad.abs().sum() > 0
    plain_loss, plain_metrics = without.compute_loss(batch, without.compute_predictions(batch))
    assert "ctc_loss" not in plain_metrics
    assert float(plain_loss) == pytest.approx(attention, rel=1e-5)  # same seed, same speller


@pytest.mark.slow
def test_training_lowers_wer(tiny_speech_corpus: dict[str, Path], tmp_path: Path) -> None:
    config = get_experiment("asr.flite_bible.las_tiny")
    corpus = tiny_speech_corpus
    config.apply_overrides(
        [
            f"data.cache_dir={corpus['cache']}",
            f"data.train_path={corpus['train']}",
            f"data.dev_path={corpus['train']}",  # fitting the training set shows learning
            f"data.test_path={corpus['test']}",
            "trainer.max_steps=200",
            "trainer.schedule.peak_learning_rate=6e-3",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            "trainer.checkpoint_every_steps=200",
            "trainer.num_threads=1",
            "task.spec_augment.num_time_masks=0",
            "task.spec_augment.num_freq_masks=0",
        ]
    )
    trainer = Trainer(config, tmp_path / "run", show_progress=False)
    _, untrained = decode_dataset(trainer.context, "dev", show_progress=False)
    trainer.train()
    _, trained = decode_dataset(trainer.context, "dev", show_progress=False)
    # Measured: WER 100 -> 54, CER 182 -> 41 (about 25 s of CPU).
    assert trained["cer"] < untrained["cer"] - 50
    assert trained["wer"] < untrained["wer"] - 20
