"""Translate with an exported artifact: no experiment registry, no training code.

Imports only the tokenizer, the beam search and the program runners, so a serving process
needs the artifact directory and the seqlab package, nothing from the run that trained it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqlab.core.layer import lengths_to_paddings
from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer
from seqlab.decoding.beam_search import BeamSearch
from seqlab.export.artifact import ArtifactError, read_manifest
from seqlab.export.exported_step_model import ExportedStepModel
from seqlab.export.input_limits import add_eos_within_limit, check_batch_size
from seqlab.export.input_text import check_plain_text
from seqlab.export.program_runners import load_program


class ArtifactPredictor:
    """Loads an artifact written by ``seqlab export`` (torch or onnx) and translates text.

    Decoding is seqlab's own batched beam search over the exported encoder and decoder-step
    programs, with the settings the model was trained with (from the manifest) unless
    overridden.
    """

    is_speech = False  # artifacts hold text-to-text models

    def __init__(
        self,
        directory: Path,
        max_batch_size: int | None = None,
        max_input_tokens: int | None = None,
        beam_search: BeamSearch.Config | None = None,
        num_threads: int = 0,
    ) -> None:
        """Loads and verifies the artifact.

        Args:
          directory: the artifact.
          max_batch_size: most texts per ``predict`` call; None = the manifest's limit.
          max_input_tokens: most tokens per text (EOS included); None = the manifest's limit.
          beam_search: decoding settings; None = those the model was trained with.
          num_threads: onnxruntime intra-op threads; 0 = as many as torch uses.

        Raises:
          ArtifactError: naming the missing, corrupt or unsupported file.
        """
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        if manifest["format"] not in ("torch", "onnx"):
            raise ArtifactError(
                f"{directory} is a {manifest['format']} artifact; ArtifactPredictor runs torch "
                "and onnx artifacts (load ctranslate2 ones with ctranslate2.Translator)"
            )
        self.manifest = manifest
        model = manifest["model"]
        limits = manifest["limits"]
        self.max_batch_size = max_batch_size or limits["max_batch_size"]
        self.max_input_tokens = max_input_tokens or limits["max_input_tokens"]
        self.tokenizer = SentencePieceTokenizer.load(
            SentencePieceTokenizer.Config(), self.directory / manifest["tokenizer"]
        )
        search_config = beam_search or BeamSearch.Config.from_dict(manifest["beam_search"])
        assert isinstance(search_config, BeamSearch.Config)
        self.search = search_config.build()
        self.start_id = int(model["start_id"])
        self.eos_id = int(model["eos_id"])
        self.pad_id = int(model["pad_id"])
        self.max_output_tokens = int(model["max_output_tokens"])
        self.model = ExportedStepModel(
            load_program(self.directory, manifest, "encoder", num_threads),
            load_program(self.directory, manifest, "decoder_step", num_threads),
            num_layers=model["num_layers"],
            num_heads=model["num_heads"],
            head_dim=model["head_dim"],
        )

    @torch.no_grad()
    def translate_ids(
        self, source_ids: list[list[int]], beam_search: BeamSearch.Config | None = None
    ) -> list[list[int]]:
        """Decodes token id lists (each ending in EOS) -> best hypothesis ids (no BOS/EOS).

        ``beam_search`` overrides the predictor's decoding settings for this call.
        """
        search = self.search if beam_search is None else beam_search.build()
        lengths = torch.tensor([len(row) for row in source_ids])
        src_ids = torch.full((len(source_ids), int(lengths.max())), self.pad_id, dtype=torch.long)
        for i, row in enumerate(source_ids):
            src_ids[i, : len(row)] = torch.tensor(row)
        src_paddings = lengths_to_paddings(lengths, src_ids.shape[1])
        state = self.model.init_state(src_ids, src_paddings)
        result = search.search(
            self.model,
            state,
            bos_id=self.start_id,
            eos_id=self.eos_id,
            batch_size=len(source_ids),
            source_lengths=lengths,
            max_length=self.max_output_tokens,
        )
        return result.best_ids

    def predict(self, texts: list[str]) -> list[str]:
        """Translates each text; one output string per input.

        Raises:
          InputTooLargeError: more than ``max_batch_size`` texts, or a text longer than
            ``max_input_tokens`` tokens.
          InputTextError: a text with a control character (tab is fine).
        """
        check_batch_size(len(texts), self.max_batch_size)
        check_plain_text(texts)
        if not texts:
            return []
        ids = add_eos_within_limit(
            self.tokenizer.encode_batch(texts), self.eos_id, self.max_input_tokens
        )
        return [self.tokenizer.decode(out) for out in self.translate_ids(ids)]

    def describe(self) -> dict[str, Any]:
        """Format, quantization and origin of the loaded artifact (for logs)."""
        keys = ("format", "quantize", "source")
        return {k: self.manifest.get(k) for k in keys}
