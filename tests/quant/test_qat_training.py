"""``--set quant.mode=qat`` trains any experiment with fake quantization; the trainer advances
the schedule, checkpoints carry it, and ``decode --quantize int8`` runs on the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqlab.cli import main
from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.export.predictor import Predictor
from seqlab.quant.fake_quantized_linear import FakeQuantizedLinear
from seqlab.train.trainer import Trainer

pytestmark = [
    pytest.mark.skipif(
        not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
        reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
    ),
    pytest.mark.slow,  # prepares the corpus, trains and decodes: about 20 s (a minute if loaded)
]


def test_qat_run_trains_checkpoints_and_decodes_int8(bible_cache_dir: Path, tmp_path: Path) -> None:
    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides(
        [
            f"data.cache_dir={bible_cache_dir}",
            "data.train_limit=200",
            "data.max_tokens=256",
            "data.eval_limit=4",
            "trainer.max_steps=7",
            "trainer.checkpoint_every_steps=0",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            "quant.mode=qat",
            "quant.schedule.clip_start_step=2",
            "quant.schedule.clip_end_step=4",
            "quant.schedule.quant_start_step=6",
        ]
    )
    preset = get_experiment("mt.bible_en_es.transformer_tiny")
    trainer = Trainer(config, tmp_path, show_progress=False, preset=preset)
    layers = [m for m in trainer.task.modules() if isinstance(m, FakeQuantizedLinear)]
    assert layers and all(int(m.step) == 0 for m in layers)
    trainer.train()
    assert all(int(m.step) == 7 and bool(m.activations.observed) for m in layers)
    assert "quant.mode: 'none' -> 'qat'" in (tmp_path / "config_diff.txt").read_text()

    restored = Predictor.from_logdir(tmp_path)
    restored_layers = [
        m for m in restored.context.task.modules() if isinstance(m, FakeQuantizedLinear)
    ]
    assert [int(m.step) for m in restored_layers] == [7] * len(layers)
    torch.testing.assert_close(
        restored_layers[0].activations.ema_max, layers[0].activations.ema_max
    )

    assert main(["decode", "--logdir", str(tmp_path), "--quantize", "int8"]) == 0
    score = json.loads((tmp_path / "decode_dev_int8" / "score-00000007.json").read_text())
    assert score["num_sentences"] == 4.0
