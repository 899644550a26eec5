"""The input limits every predictor enforces, with messages naming the limit."""

from __future__ import annotations


class InputTooLargeError(ValueError):
    """An input over the predictor's limits; the message says which limit.

    ``index`` is the position of the text that is too long (None for too many texts), so that
    a caller reading a file can name its line.
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


def check_batch_size(num_texts: int, max_batch_size: int) -> None:
    """Raises InputTooLargeError if one call has more than ``max_batch_size`` texts."""
    if num_texts > max_batch_size:
        raise InputTooLargeError(f"{num_texts} inputs in one call; the limit is {max_batch_size}")


def check_input_lengths(ids: list[list[int]], max_input_tokens: int) -> None:
    """Refuses a tokenized input that, with one more token (EOS, or an LM's BOS), would be
    longer than ``max_input_tokens``.

    Raises:
      InputTooLargeError: naming the first input that is too long.
    """
    for i, row in enumerate(ids):
        if len(row) + 1 > max_input_tokens:
            raise InputTooLargeError(
                f"input {i} has {len(row) + 1} tokens; the limit is {max_input_tokens}", i
            )


def add_eos_within_limit(
    ids: list[list[int]], eos_id: int, max_input_tokens: int
) -> list[list[int]]:
    """Appends EOS to each tokenized input.

    Raises:
      InputTooLargeError: naming the first input longer than ``max_input_tokens`` with EOS.
    """
    check_input_lengths(ids, max_input_tokens)
    return [row + [eos_id] for row in ids]
