"""This process's place in a torchrun job (rank, world size, local rank), read from the
environment; one process of one when torchrun did not start it."""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the job, as torchrun describes it in the environment."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and summaries and prints progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


def world_from_env() -> World:
    """The World from torchrun's RANK, WORLD_SIZE and LOCAL_RANK (one process if unset)."""
    world = World(
        rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=_env_int("LOCAL_RANK", 0),
    )
    if world.world_size < 1 or not 0 <= world.rank < world.world_size:
        raise ValueError(
            f"RANK={world.rank} WORLD_SIZE={world.world_size}: need 0 <= RANK < WORLD_SIZE"
        )
    return world
