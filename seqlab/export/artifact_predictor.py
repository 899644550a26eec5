"""Decode with an exported artifact: no experiment registry, no training code.

Imports only the tokenizer, the beam search, the sampler, the audio reader, the CTC search
and the program runners (or the ctranslate2 package), so a serving process needs the
artifact directory and the seqlab package, nothing from the run that trained it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlab.core.layer import lengths_to_paddings
from seqlab.data.audio_files import pad_waveforms, read_audio
from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer
from seqlab.data.transcripts import labels_to_transcript
from seqlab.decoding.beam_search import BeamSearch
from seqlab.decoding.ctc import ctc_decode
from seqlab.decoding.sampling import Sampler
from seqlab.export.artifact import ArtifactError, read_manifest
from seqlab.export.exported_step_model import ExportedStepModel
from seqlab.export.input_limits import (
    InputTooLargeError,
    add_eos_within_limit,
    check_batch_size,
    check_input_lengths,
)
from seqlab.export.input_text import check_plain_text
from seqlab.export.model_families import LANGUAGE_MODEL, SPEECH_CTC
from seqlab.export.program_runners import CPU, load_program


class ArtifactPredictor:
    """Loads an artifact written by ``seqlab export`` and decodes text with it.

    Translation models (torch and onnx artifacts) decode with seqlab's own batched beam search
    over the exported encoder and decoder-step programs; language models continue prompts with
    seqlab's sampler over the step program; speech models (Conformer-CTC) transcribe audio
    files with seqlab's CTC search over the program's per-frame log-probs; ctranslate2
    artifacts translate with CTranslate2's own search. The decoding settings are those the
    model was trained with (from the manifest) unless overridden.
    """

    def __init__(
        self,
        directory: Path,
        max_batch_size: int | None = None,
        max_input_tokens: int | None = None,
        beam_search: BeamSearch.Config | None = None,
        num_threads: int = 0,
        device: str | torch.device = CPU,
        sampler: Sampler.Config | None = None,
    ) -> None:
        """Loads and verifies the artifact.

        Args:
          directory: the artifact.
          max_batch_size: most texts per ``predict`` call; None = the manifest's limit.
          max_input_tokens: most tokens per text (EOS or BOS included); None = the
            manifest's limit.
          beam_search: a translation model's decoding settings; None = as trained.
          num_threads: onnxruntime / CTranslate2 intra-op threads; 0 = as many as torch uses.
          device: cpu, cuda, cuda:N or auto; where the programs (or CTranslate2) run.
          sampler: a language model's decoding settings; None = as trained.

        Raises:
          ArtifactError: naming the missing, corrupt or unsupported file.
          DeviceError: a device this machine (or the artifact's runtime) cannot use.
        """
        if not isinstance(device, torch.device):
            # Imported only here: a predictor given a torch.device loads nothing from
            # seqlab.train.
            from seqlab.train.device import resolve_device

            device = resolve_device(device, name="device")
        self.device = device
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        self.manifest = manifest
        model = manifest["model"]
        limits = manifest["limits"]
        self.kind = model.get("kind")
        self.is_speech = self.kind == SPEECH_CTC
        self.max_batch_size = max_batch_size or limits["max_batch_size"]
        self.tokenizer = SentencePieceTokenizer.load(
            SentencePieceTokenizer.Config(), self.directory / manifest["tokenizer"]
        )
        # onnxruntime takes and returns host tensors, whichever device it runs on.
        self.tensor_device = device if manifest["format"] == "torch" else CPU
        if self.is_speech:
            self.sample_rate = int(model["sample_rate"])
            self.blank_id = int(model["blank_id"])
            self.ctc_search = manifest["ctc_search"]
            self.min_samples, self.max_samples = limits["min_samples"], limits["max_samples"]
            self.recognizer = load_program(self.directory, manifest, "encoder", num_threads, device)
            return
        self.max_input_tokens = max_input_tokens or limits["max_input_tokens"]
        self.start_id = int(model["start_id"])
        self.eos_id = int(model["eos_id"])
        self.pad_id = int(model["pad_id"])
        if self.kind == LANGUAGE_MODEL:
            sampler_config = sampler or Sampler.Config.from_dict(manifest["sampler"])
            assert isinstance(sampler_config, Sampler.Config)
            self.sampler = sampler_config.build()
        else:
            search_config = beam_search or BeamSearch.Config.from_dict(manifest["beam_search"])
            assert isinstance(search_config, BeamSearch.Config)
            self.search = search_config.build()
            self.max_output_tokens = int(model["max_output_tokens"])
        self.translator: Any = None
        if manifest["format"] == "ctranslate2":
            from seqlab.export.ctranslate2_runner import load_translator

            self.translator = load_translator(self.directory, manifest, device, num_threads)
            processor = self.tokenizer.processor
            self.pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
            return
        state = manifest["state"]
        programs = manifest["programs"]
        self.max_steps = state.get("max_steps")
        self.model = ExportedStepModel(
            load_program(self.directory, manifest, "decoder_step", num_threads, device),
            carried=state["carried"],
            constants=state["constants"],
            encoder=(
                load_program(self.directory, manifest, "encoder", num_threads, device)
                if "encoder" in programs
                else None
            ),
            initial_shapes=state.get("initial_shapes"),
            device=self.tensor_device,
        )

    @torch.no_grad()
    def translate_ids(
        self, source_ids: list[list[int]], beam_search: BeamSearch.Config | None = None
    ) -> list[list[int]]:
        """Decodes token id lists (each ending in EOS) -> best hypothesis ids (no BOS/EOS).

        ``beam_search`` overrides the predictor's decoding settings for this call. A
        ctranslate2 artifact runs CTranslate2's search with the same beam size and length
        limits, and ``length_penalty_alpha`` as its length penalty (it normalizes by
        ``|Y| ** alpha``, seqlab by GNMT's ``((5 + |Y|) / 6) ** alpha``).
        """
        search = self.search if beam_search is None else beam_search.build()
        lengths = torch.tensor([len(row) for row in source_ids])
        if self.translator is not None:
            from seqlab.export.ctranslate2_runner import translate_ids

            max_lengths = search.max_lengths(lengths, self.max_output_tokens)
            return translate_ids(
                self.translator,
                self.pieces,
                source_ids,
                max_lengths.tolist(),
                beam_size=search.config.beam_size,
                length_penalty=search.config.length_penalty_alpha,
            )
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

    @torch.no_grad()
    def continue_ids(self, prompts: list[list[int]]) -> list[list[int]]:
        """A language model's continuations of token id prompts (without BOS), EOS not
        included, as ``seqlab infer`` samples them from a logdir.

        Raises:
          InputTooLargeError: a prompt plus ``max_new_tokens`` beyond the positions the
            model's step program accepts.
        """
        steps = self.sampler.num_steps(prompts)
        if self.max_steps is not None and steps > self.max_steps:
            raise InputTooLargeError(
                f"the longest prompt plus sampler.max_new_tokens needs {steps} steps; this "
                f"model has positions for {self.max_steps}"
            )
        state = self.model.zero_state(len(prompts))
        return self.sampler.sample(self.model, state, prompts, self.start_id, self.eos_id)

    def predict(self, texts: list[str]) -> list[str]:
        """Translates each text, or (a language model) continues it; one output per input.

        Raises:
          InputTooLargeError: more than ``max_batch_size`` texts, or a text longer than
            ``max_input_tokens`` tokens.
          InputTextError: a text with a control character (tab is fine).
          ArtifactError: a speech model's artifact (it transcribes audio files).
        """
        if self.is_speech:
            raise ArtifactError(f"{self.directory} holds a speech model: call transcribe(paths)")
        check_batch_size(len(texts), self.max_batch_size)
        check_plain_text(texts)
        if not texts:
            return []
        ids = self.tokenizer.encode_batch(texts)
        if self.kind == LANGUAGE_MODEL:
            check_input_lengths(ids, self.max_input_tokens)
            outputs = self.continue_ids(ids)
        else:
            outputs = self.translate_ids(
                add_eos_within_limit(ids, self.eos_id, self.max_input_tokens)
            )
        return [self.tokenizer.decode(out) for out in outputs]

    def transcribe(self, audio_paths: list[Path]) -> list[str]:
        """A speech model's transcripts of audio files (WAV, FLAC, ...; resampled to the
        model's rate), searched as the model was trained to decode (greedy or prefix beam).

        Raises:
          InputTooLargeError: more than ``max_batch_size`` files, or a file longer than the
            program accepts.
          AudioError: naming a missing, unreadable or empty file.
        """
        check_batch_size(len(audio_paths), self.max_batch_size)
        waveforms = [read_audio(Path(p), self.sample_rate, resample=True) for p in audio_paths]
        return self.transcribe_waveforms(waveforms, [f"audio file {p}" for p in audio_paths])

    @torch.no_grad()
    def transcribe_waveforms(
        self, waveforms: list[np.ndarray], names: list[str] | None = None
    ) -> list[str]:
        """Transcripts of mono float32 waveforms at ``sample_rate`` (each [N_i]); ``names``
        say what each is in errors (default "input i").

        Raises:
          InputTooLargeError: more than ``max_batch_size`` waveforms, or one longer than the
            program accepts.
        """
        check_batch_size(len(waveforms), self.max_batch_size)
        if not waveforms:
            return []
        rate = self.sample_rate
        names = names or [f"input {i}" for i in range(len(waveforms))]
        for index, (name, samples) in enumerate(zip(names, waveforms, strict=True)):
            if self.max_samples is not None and len(samples) > self.max_samples:
                raise InputTooLargeError(
                    f"{name} is {len(samples) / rate:.1f} s long; this artifact "
                    f"takes at most {self.max_samples / rate:.1f} s",
                    index,
                )
        # A batch narrower than the program's fewest samples is padded to them (padding is
        # masked); otherwise the longest file is unpadded, as in ``seqlab infer --logdir``.
        audio, paddings = pad_waveforms(waveforms, self.min_samples)
        device = self.tensor_device
        log_probs, frame_paddings = self.recognizer(audio.to(device), paddings.to(device))
        search = self.ctc_search
        ids = ctc_decode(
            log_probs.float(),
            frame_paddings,
            search["decoder"],
            search["beam_size"],
            self.blank_id,
            search["labels_per_frame"],
        )
        return [labels_to_transcript(self.tokenizer, row) for row in ids]

    def describe(self) -> dict[str, Any]:
        """Format, quantization and origin of the loaded artifact (for logs)."""
        keys = ("format", "quantize", "source")
        return {k: self.manifest.get(k) for k in keys}
