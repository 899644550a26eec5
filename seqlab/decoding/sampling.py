"""Sampling continuations of prompts from an incremental model: greedy, temperature, top-k,
top-p (nucleus; Holtzman et al. 2020).

Draws come from a ``torch.Generator`` seeded by ``seed``, so a run is deterministic: the same
model, prompts and config give the same continuations.
"""

from __future__ import annotations

import dataclasses

import torch

from seqlab.core.config import Config, ConfigError, Configurable, param
from seqlab.core.nested_map import NestedMap
from seqlab.decoding.step_model import IncrementalModel


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """The log-probabilities to sample from: tempered, then cut to the top k, then to the
    nucleus of mass ``top_p``.

    Args:
      logits: [N, V] unnormalized scores (or log-probabilities).
      temperature: > 0; scores are divided by it (below 1 sharpens, above 1 flattens).
      top_k: keep the k highest-scoring tokens (0 = all). Ties at the k-th score are kept.
      top_p: keep the fewest highest-probability tokens whose mass reaches ``top_p``
        (1.0 = all); the token that crosses the threshold is kept.

    Returns:
      [N, V] float32 log-probabilities renormalized over the kept tokens, -inf elsewhere.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    scores = logits.float() / temperature
    if 0 < top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores.log_softmax(dim=-1)


class Sampler(Configurable):
    """Continues prompts token by token: greedy when ``temperature`` is 0, else sampled."""

    @dataclasses.dataclass
    class Config(Config):
        temperature: float = param(1.0, doc="Divides the logits; 0 = greedy (argmax).", at_least=0)
        top_k: int = param(0, doc="Sample among the k most likely tokens (0 = all).", at_least=0)
        top_p: float = param(
            1.0, doc="Sample within the nucleus of this mass (1.0 = all).", above=0, at_most=1
        )
        max_new_tokens: int = param(
            40, doc="Most tokens generated per prompt (EOS not counted).", at_least=1
        )
        seed: int = param(0, doc="Seed of the draws: the same seed gives the same samples.")

    config: Config

    def __init__(self, config: Config) -> None:
        if config.temperature < 0 or config.top_k < 0 or not 0 < config.top_p <= 1:
            raise ConfigError(
                "sampler needs temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got "
                f"temperature={config.temperature}, top_k={config.top_k}, top_p={config.top_p}"
            )
        if config.max_new_tokens < 1:
            raise ConfigError(f"sampler.max_new_tokens must be >= 1, got {config.max_new_tokens}")
        self.config = config

    def choose(self, log_probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[N, V] next-token log-probs -> [N] chosen tokens."""
        c = self.config
        if c.temperature == 0:
            return log_probs.argmax(dim=-1)
        filtered = filter_logits(log_probs, c.temperature, c.top_k, c.top_p)
        return torch.multinomial(filtered.exp(), 1, generator=generator)[:, 0]

    def num_steps(self, prompts: list[list[int]]) -> int:
        """Most ``extend_step`` calls :meth:`sample` makes for these prompts."""
        return max(len(p) for p in prompts) + self.config.max_new_tokens

    @torch.no_grad()
    def sample(
        self,
        model: IncrementalModel,
        state: NestedMap,
        prompts: list[list[int]],
        bos_id: int,
        eos_id: int,
    ) -> list[list[int]]:
        """Continues each prompt until EOS or ``max_new_tokens``.

        All rows step together from BOS: a row is fed its own prompt tokens until they run
        out, and its continuation starts there, so prompts may differ in length.

        Args:
          model: ``extend_step(state, ids [N]) -> ([N, V] log-probs, state, _)``.
          state: the model's state for N rows, with room for
            ``max(len(prompt)) + max_new_tokens`` steps (:meth:`num_steps`).
          prompts: N token id lists (without BOS).
          bos_id: the first token of every row.
          eos_id: ends a continuation.

        Returns:
          N continuations (token ids, EOS not included).
        """
        generator = torch.Generator().manual_seed(self.config.seed)
        num_rows = len(prompts)
        longest = max(len(p) for p in prompts)
        prompt_ids = torch.full((num_rows, longest + 1), eos_id, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            prompt_ids[row, 1 : len(prompt) + 1] = torch.tensor(prompt, dtype=torch.long)
        prompt_ends = torch.tensor([len(p) for p in prompts])
        outputs: list[list[int]] = [[] for _ in range(num_rows)]
        finished = torch.zeros(num_rows, dtype=torch.bool)
        ids = torch.full((num_rows,), bos_id, dtype=torch.long)
        for step in range(longest + self.config.max_new_tokens):
            log_probs, state, _ = model.extend_step(state, ids)
            chosen = self.choose(log_probs.float().cpu(), generator)
            in_prompt = step < prompt_ends
            forced = prompt_ids[:, min(step + 1, longest)]
            ids = torch.where(in_prompt, forced, chosen)
            for row in (~in_prompt & ~finished).nonzero()[:, 0].tolist():
                token = int(ids[row])
                if token == eos_id:
                    finished[row] = True
                else:
                    outputs[row].append(token)
                    finished[row] = len(outputs[row]) >= self.config.max_new_tokens
            if bool(finished.all()):
                break
            ids = ids.to(log_probs.device)
        return outputs
