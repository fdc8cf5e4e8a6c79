"""This process's place in a `paddle.distributed` launch, as the launcher's environment says.

Read without importing paddle: the CLI decides which rank prints, and whether it was launched at
all, before paddle loads. `ppddpm.core.distributed` (which joins the ranks through paddle) and
`ppddpm.cli.launch` take the rank and the number of ranks from here.
"""
from __future__ import annotations

import os
from pathlib import Path

RANK_VARIABLE = "PADDLE_TRAINER_ID"       # set by `python -m paddle.distributed.launch` for each rank
SIZE_VARIABLE = "PADDLE_TRAINERS_NUM"
IN_NODE_VARIABLE = "PADDLE_RANK_IN_NODE"  # this rank's place among its node's ranks (paddle numbers a node's
                                          # ranks consecutively, the first node's from 0)
OUTPUT_VARIABLE = "PPDDPM_RANK_OUTPUT"    # set by `ppddpm --nproc` (ppddpm.cli.launch): the ranks' scratch folder


def launched() -> bool:
    """Whether this process is a rank of a `paddle.distributed` launch."""
    return RANK_VARIABLE in os.environ


def rank() -> int:
    """This process's rank (0 outside a launch)."""
    return int(os.environ.get(RANK_VARIABLE, "0"))


def ranks() -> int:
    """How many ranks the launch has (1 outside a launch)."""
    return int(os.environ.get(SIZE_VARIABLE, "1"))


def is_lead() -> bool:
    """Rank 0: the process that prints and writes the shared outputs."""
    return rank() == 0


def on_lead_node() -> bool:
    """Whether this rank runs on rank 0's node (always, on one node): the node whose file system holds
    the outputs. A multi-node launch's other ranks write nothing there; what they make reaches rank 0
    through the gather (`ppddpm.cli.common.share_folder`)."""
    return rank() == int(os.environ.get(IN_NODE_VARIABLE, "0"))


def mark_joined():
    """Under `ppddpm --nproc`, once every rank has joined (paddle's init_parallel_env returned, and a
    barrier after it): a `rank<N>.joined` file in the scratch folder. No rank begins the command's work
    before that, so a launch that failed with none of these files failed before any work
    (`ppddpm.cli.launch`)."""
    folder = os.environ.get(OUTPUT_VARIABLE)
    if folder:
        Path(folder, f"rank{rank()}.joined").touch()
