"""Seeded streaming tasks and data loaders (numpy only).

Every task returns time-major :class:`Batch` es ``(x, y, mask, label)`` and offers
``sample(rng, batch_size, split)``, an endless reproducible ``stream(seed, batch_size, split)``
and a fixed evaluation pass ``epoch(batch_size, split)`` (see :mod:`traxon.tasks.base`).

============ ================================ =============================================
name         class                            what
============ ================================ =============================================
evidence     :class:`EvidenceAccumulation`    cue accumulation over a delay (e-prop)
dms          :class:`DelayedMatchToSample`    delayed match-to-sample, direction tuning
digits       :class:`SpikingDigits`           sklearn 8x8 digits, rate/latency spikes
shd          :class:`SpikingHeidelbergDigits` Spiking Heidelberg Digits HDF5 loader
region_rates :class:`RegionRates`             whole-brain region firing-rate fitting
============ ================================ =============================================
"""

from __future__ import annotations

from typing import Any

from traxon.tasks.base import Batch, Task
from traxon.tasks.digits import SpikingDigits
from traxon.tasks.dms import DelayedMatchToSample
from traxon.tasks.evidence import EvidenceAccumulation
from traxon.tasks.shd import SpikingHeidelbergDigits, write_shd_file
from traxon.tasks.whole_brain import RegionRates, load_targets, region_rate_loss

__all__ = [
    "TASKS",
    "Batch",
    "DelayedMatchToSample",
    "EvidenceAccumulation",
    "RegionRates",
    "SpikingDigits",
    "SpikingHeidelbergDigits",
    "Task",
    "get_task",
    "load_targets",
    "region_rate_loss",
    "write_shd_file",
]

TASKS: dict[str, type[Task]] = {
    "evidence": EvidenceAccumulation,
    "dms": DelayedMatchToSample,
    "digits": SpikingDigits,
    "shd": SpikingHeidelbergDigits,
    "region_rates": RegionRates,
}
"""Task classes by registry name."""


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task from its registry name.

    Arguments:
        name: one of ``"evidence"``, ``"dms"``, ``"digits"``, ``"shd"`` (the keys of
            :data:`TASKS`).
        **kwargs: passed to the task's constructor.

    Returns:
        The task instance.

    Example:
        >>> from traxon.tasks import get_task
        >>> task = get_task("evidence", n_cues=3, cue_ms=20, delay_ms=50, recall_ms=30)
        >>> type(task).__name__, task.n_steps
        ('EvidenceAccumulation', 290)
    """
    if not isinstance(name, str) or name not in TASKS:
        allowed = ", ".join(repr(k) for k in sorted(TASKS))
        raise ValueError(f"`name` must be one of {allowed}; got {name!r}.")
    return TASKS[name](**kwargs)
