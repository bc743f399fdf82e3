"""Which process this is in a multi-process ``mmrec embed``, and how rank 0's decisions reach the others.

Every process runs the whole recipe, entry by entry, and they must agree on each entry: either all of them
run ``Trainer.predict`` for it (its collectives and barriers need every rank) or none does. Rank 0 decides
(is the store complete? does it need building?) and the others follow:

- once a process group exists, rank 0 broadcasts each decision (:func:`agree`);
- Lightning's own launcher starts ranks 1..N-1 from inside rank 0's first ``Trainer.predict``, as fresh
  copies of the command, which start the recipe from its first entry: rank 0 lists the entries it settled
  before that moment in an environment variable (:data:`SETTLED_ENV`) that the copies inherit and skip;
- processes started together by an external launcher (``torchrun``, SLURM, LSF, MPI, Kubeflow: several
  nodes) join their process group at the start (:func:`join_external_group`), so the first decision is
  already broadcast. Nodes then need not share a filesystem: a store that rank 0 finds complete is skipped
  everywhere.

Example:
    >>> env_rank() if "RANK" not in os.environ and "LOCAL_RANK" not in os.environ else 0
    0
"""

from __future__ import annotations

import os
from typing import Any

import torch

#: Entries (store names) that rank 0 settled before Lightning started the other ranks.
SETTLED_ENV = "MMREC_EMBED_SETTLED"
_LAUNCHER_VARS = ("WORLD_SIZE", "SLURM_NTASKS", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def dist_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def env_rank() -> int:
    """This process's global rank (0 when not distributed), from the group or the launcher's variables."""
    if dist_initialized():
        return int(torch.distributed.get_rank())
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) != 0:
            return int(os.environ[var])
    return 0 if os.environ.get("NODE_RANK", "0") in ("", "0") else 1


def is_lightning_child() -> bool:
    """Whether Lightning's launcher started this process for rank 0 (it inherited :data:`SETTLED_ENV`)."""
    return SETTLED_ENV in os.environ and env_rank() != 0


def settled_before_launch() -> set[str]:
    """The entries a Lightning-launched rank skips: those rank 0 had settled when it started the ranks."""
    if not is_lightning_child():
        return set()
    return {s for s in os.environ[SETTLED_ENV].split(",") if s}


def mark_settled(names: list[str]) -> None:
    """Rank 0, before a ``Trainer.predict`` that may start the other ranks: record the settled entries."""
    if env_rank() == 0 and not dist_initialized():
        os.environ[SETTLED_ENV] = ",".join(names)


def join_external_group() -> bool:
    """Join the process group now when an external launcher started several processes of this command.

    Returns:
        Whether a process group is (now) initialized.
    """
    if dist_initialized():
        return True
    if SETTLED_ENV in os.environ or not any(v in os.environ for v in _LAUNCHER_VARS):
        return False
    from lightning.fabric.plugins.environments import (
        KubeflowEnvironment,
        LSFEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )
    from lightning.fabric.utilities.distributed import _init_dist_connection

    for cls in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, KubeflowEnvironment):
        try:
            detected = cls.detect()
        except Exception:  # a half-configured environment: leave it to Lightning to report
            detected = False
        if detected:
            env = cls()
            if env.world_size() <= 1:
                return False
            _init_dist_connection(env, "gloo")  # only small objects travel through it; Lightning reuses it
            return True
    return False


def agree(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (the value itself when there is no process group)."""
    if not dist_initialized() or torch.distributed.get_world_size() <= 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
