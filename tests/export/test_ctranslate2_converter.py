"""The CTranslate2 conversion: its greedy output equals seqlab's token for token."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from seqlab.decoding.beam_search import BeamSearch
from seqlab.export.artifact import ArtifactError
from seqlab.export.ctranslate2_converter import transformer_spec
from seqlab.export.ctranslate2_runner import translate_ids
from seqlab.models.mt.transformer_model import TransformerMT

ctranslate2 = pytest.importorskip(
    "ctranslate2", reason="ctranslate2 not installed (pip install 'seqlab[ctranslate2]')"
)


def converted_translator(task: TransformerMT, directory, pieces: list[str]):
    spec = transformer_spec(task, pieces)

    class SpecConverter(ctranslate2.converters.Converter):
        def _load(self):
            return spec

    SpecConverter().convert(str(directory), quantization="float32")
    return ctranslate2.Translator(str(directory), device="cpu", intra_threads=1)


def pieces_for(task: TransformerMT) -> list[str]:
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    return specials + [f"p{i}" for i in range(4, task.config.embedding.vocab_size)]


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
def test_ctranslate2_greedy_equals_seqlab_greedy(
    random_tiny_mt: TransformerMT,
    random_sources: list[list[int]],
    greedy: BeamSearch.Config,
    decode_with_task,
    tmp_path,
    norm_first: bool,
) -> None:
    task = random_tiny_mt
    if not norm_first:  # the same weights wired post-LN, without final norms
        config = dataclasses.replace(task.config)
        for stack in (config.encoder, config.decoder):
            stack.layer.norm_first = False
            stack.final_norm = False
        torch.manual_seed(1)
        task = TransformerMT(config).eval()
    pieces = pieces_for(task)
    expected = decode_with_task(task, random_sources, greedy)
    search = greedy.build()
    max_lengths = search.max_lengths(torch.tensor([len(s) for s in random_sources]), 1023)
    translator = converted_translator(task, tmp_path / "ct2", pieces)
    got = translate_ids(translator, pieces, random_sources, max_lengths.tolist())
    assert got == expected
    assert any(len(ids) > 3 for ids in expected)  # not a trivially empty comparison


def test_unsupported_settings_are_named(random_tiny_mt: TransformerMT) -> None:
    random_tiny_mt.config.start_id = 4
    with pytest.raises(ArtifactError, match="start_id"):
        transformer_spec(random_tiny_mt, pieces_for(random_tiny_mt))
