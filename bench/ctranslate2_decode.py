"""The CTranslate2 side of the decoding benchmarks: the same TransformerMT, converted.

The model is converted with seqlab's own exporter code
(``seqlab.export.ctranslate2_converter.convert_to_ctranslate2``, as ``seqlab export --format
ctranslate2`` does) into a float32 model directory; ``compute_type="int8"`` then quantizes its
weights at load time (CTranslate2's int8 scheme, the same as converting with int8).

Both engines get the same source token ids and are forced to run the same number of decoder
steps over the same beams: CTranslate2 with ``min_decoding_length = max_decoding_length``
(EOS is masked before the minimum, decoding stops at the maximum), seqlab by the harness in
``bench_transformer_vs_marian.seqlab_forced_length``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer
from seqlab.export.ctranslate2_converter import convert_to_ctranslate2


class CTranslate2Decoder:
    """A ``ctranslate2.Translator`` of a TransformerMT, decoding token ids to fixed lengths."""

    def __init__(
        self,
        task: Any,
        tokenizer: SentencePieceTokenizer,
        compute_type: str,
        threads: int,
        model_dir: Path | None = None,
    ) -> None:
        """Converts ``task`` (unless ``model_dir`` already holds it) and loads it.

        Args:
          task: a TransformerMT (its current weights are converted).
          tokenizer: its SentencePiece model; the pieces are CTranslate2's vocabulary.
          compute_type: "float32" or "int8".
          threads: CTranslate2's intra-op threads (one translation at a time).
          model_dir: an existing converted float32 model to reuse, or None to convert into a
            temporary directory owned by this object.
        """
        import ctranslate2

        self._tmp: tempfile.TemporaryDirectory | None = None
        if model_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="seqlab-bench-ct2-")
            model_dir = Path(self._tmp.name) / "model"
            convert_to_ctranslate2(task, tokenizer, model_dir, quantize="none")
        self.model_dir = model_dir
        processor = tokenizer.processor
        self.pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        self.translator = ctranslate2.Translator(
            str(model_dir),
            device="cpu",
            compute_type=compute_type,
            inter_threads=1,
            intra_threads=threads,
        )

    def decode(
        self, source_ids: list[list[int]], num_steps: int, beam_size: int, length_penalty: float
    ) -> list[list[str]]:
        """Translates ``source_ids`` (each ending in EOS) running exactly ``num_steps`` steps.

        Returns:
          The best hypothesis of each source as pieces (``num_steps`` of them, no EOS).
        """
        results = self.translator.translate_batch(
            [[self.pieces[i] for i in row] for row in source_ids],
            beam_size=beam_size,
            length_penalty=length_penalty,
            min_decoding_length=num_steps,
            max_decoding_length=num_steps,
            max_input_length=0,
        )
        return [result.hypotheses[0] for result in results]

    def close(self) -> None:
        """Removes the temporary model directory, if this object made one."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
