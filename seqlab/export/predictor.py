"""The Predictor: translate text with a checkpoint of a logdir (the newest good one by default)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from seqlab.data.mt_data import MTExamples
from seqlab.data.multi_task_data import MultiTaskData, UnknownTaskError
from seqlab.export.input_limits import InputTooLargeError, add_eos_within_limit, check_batch_size
from seqlab.export.input_text import check_plain_text
from seqlab.layers.packed_linear import pack_linear_layers
from seqlab.quant.ptq import check_int8_device, check_quantize_mode, quantize_int8
from seqlab.train.checkpoint_choice import load_chosen_checkpoint
from seqlab.train.checkpoint_fit import load_model_state
from seqlab.train.config_changes import config_for_checkpoints
from seqlab.train.device import resolve_device
from seqlab.train.ema import model_state
from seqlab.train.run_context import RunContext, build_context

__all__ = ["InputTooLargeError", "Predictor"]


class Predictor:
    """Loads a trained task from a logdir and decodes raw text with it."""

    def __init__(
        self,
        context: RunContext,
        max_batch_size: int = 64,
        max_input_tokens: int = 256,
        task: str = "",
    ) -> None:
        """``task`` names the task to run in a multi-task model (and must be empty otherwise).

        Raises:
          UnknownTaskError: for a missing, unknown or superfluous ``task``.
        """
        self.context = context
        self.max_batch_size = max_batch_size
        self.max_input_tokens = max_input_tokens
        self.task = task
        self.checkpoint_path: Path | None = None
        self.checkpoint_step: int | None = None
        if isinstance(context.data, MultiTaskData):
            if not task:
                raise UnknownTaskError(
                    f"this model has tasks {context.data.task_names}; choose one with --task"
                )
            context.data.check_task(task)
        elif task:
            raise UnknownTaskError(f"--task {task}: this model has a single task; omit --task")
        context.task.eval()

    @classmethod
    def from_logdir(
        cls,
        logdir: Path,
        max_batch_size: int = 64,
        max_input_tokens: int = 256,
        task: str = "",
        use_ema: bool | None = None,
        quantize: str = "none",
        pack_linear: bool = True,
        device: str | torch.device = "cpu",
        checkpoint: str | int | Path | None = None,
        overrides: Sequence[str] = (),
    ) -> Predictor:
        """Builds the task of ``logdir`` and loads its newest checkpoint that verifies, or the
        one ``checkpoint`` names (a step of the run's checkpoints, or a checkpoint file).

        ``use_ema`` loads the moving average of the weights (None: as the logdir's
        ``trainer.use_ema_for_eval`` says). ``quantize="int8"`` decodes with dynamic int8
        Linear layers (``seqlab.quant.ptq``). ``pack_linear`` prepacks the float Linear
        layers for oneDNN (``pack_linear_layers``: the same outputs, faster decoding; off
        for a task that is to be exported). ``device``: cpu, cuda, cuda:N or auto (int8 is
        CPU-only). ``overrides``: ``key=value`` settings of the logdir's config changed for
        this predictor, e.g. ``task.beam_search.beam_size=1`` (refused if they change the
        model's parameters). The loaded file is ``checkpoint_path``, its step
        ``checkpoint_step``.
        """
        target = (
            device if isinstance(device, torch.device) else resolve_device(device, name="device")
        )
        check_quantize_mode(quantize)
        check_int8_device(quantize, target)
        config = config_for_checkpoints(logdir, overrides)
        context = build_context(config, logdir, train_tokenizer=False, device=target)
        found = load_chosen_checkpoint(context.checkpoint_dir, checkpoint)
        if use_ema is None:
            use_ema = config.trainer.use_ema_for_eval
        path, payload = found
        weights = model_state(payload, path, use_ema)
        load_model_state(context.task, weights, path, payload.get("config"))
        if quantize == "int8":
            context.task = quantize_int8(context.task)
        if pack_linear:
            context.task = pack_linear_layers(context.task)
        predictor = cls(
            context, max_batch_size=max_batch_size, max_input_tokens=max_input_tokens, task=task
        )
        predictor.checkpoint_path = path
        predictor.checkpoint_step = payload.get("step")
        return predictor

    @torch.no_grad()
    def predict(self, texts: list[str]) -> list[str]:
        """Decodes each input text; returns one output string per input.

        Raises:
          InputTooLargeError: more than ``max_batch_size`` texts, or a text longer than
            ``max_input_tokens`` tokens.
          InputTextError: a text with a control character (tab is fine).
        """
        check_batch_size(len(texts), self.max_batch_size)
        check_plain_text(texts)
        if not texts:
            return []
        data = self.context.data
        if hasattr(data, "examples_from_texts"):
            # Inputs other than translation sources (LM prompts, a user's task) are made by
            # the task's own data: raw texts -> examples that its collate() batches.
            examples = data.examples_from_texts(list(texts))
            batch = data.collate(examples, list(range(len(texts)))).to(self.context.device)
            task = self.context.task
            return [r["hypothesis"] for r in task.process_decode_out(batch, task.decode(batch))]
        ids = data.tokenizer.encode_batch(texts)
        eos = data.tokenizer.processor.eos_id()
        examples = MTExamples(
            source_ids=add_eos_within_limit(ids, eos, self.max_input_tokens),
            target_ids=[[] for _ in ids],
            source_text=list(texts),
            target_text=["" for _ in texts],
        )
        if self.task:
            examples = data.task_examples(self.task, examples)
        batch = data.collate(examples, list(range(len(texts)))).to(self.context.device)
        task = self.context.task
        results = task.process_decode_out(batch, task.decode(batch))
        return [r["hypothesis"] for r in results]

    @property
    def is_speech(self) -> bool:
        """Whether the model transcribes audio (its input is an ASRData)."""
        from seqlab.data.asr_data import ASRData

        return isinstance(self.context.data, ASRData)

    @property
    def sample_rate(self) -> int:
        """A speech model's audio sample rate (Hz)."""
        return int(self.context.data.config.sample_rate)

    def transcribe(self, audio_paths: list[Path]) -> list[str]:
        """Transcribes audio files (WAV, FLAC, ...; resampled to the model's rate).

        Raises:
          InputTooLargeError: more than ``max_batch_size`` files.
          AudioError: naming a missing, unreadable or empty file.
        """
        from seqlab.data.audio_files import read_audio

        check_batch_size(len(audio_paths), self.max_batch_size)
        return self.transcribe_waveforms(
            [read_audio(Path(p), self.sample_rate, resample=True) for p in audio_paths],
            [str(p) for p in audio_paths],
        )

    @torch.no_grad()
    def transcribe_waveforms(
        self, waveforms: list[np.ndarray], names: list[str] | None = None
    ) -> list[str]:
        """Transcribes mono float32 waveforms at ``sample_rate`` (each [N_i]); ``names``
        label them in the batch (default: their positions).

        Raises:
          InputTooLargeError: more than ``max_batch_size`` waveforms.
        """
        from seqlab.data.asr_data import batch_from_waveforms

        check_batch_size(len(waveforms), self.max_batch_size)
        if not waveforms:
            return []
        names = names or [str(i) for i in range(len(waveforms))]
        batch = batch_from_waveforms(
            waveforms,
            [[] for _ in names],
            names,
            names,
            list(range(len(names))),
            self.sample_rate,
        ).to(self.context.device)
        task = self.context.task
        return [r["hypothesis"] for r in task.process_decode_out(batch, task.decode(batch))]
