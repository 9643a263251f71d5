"""Typed keys the adapter hands to the model contract, and the state's extra sections.

The model contract names a population's inputs (the keys of its ``u``) and its signals
with strings. The adapter makes those strings from these keys only, through their
``label``, so that each kind of name is defined, documented and parsed in one place:

* :class:`InputKey` -- a key of a population's ``u``: the input one weight op delivers to
  its target population (``InputKey.weight``), or an input of a population's transition
  that is neither its own state nor a weight's output (``InputKey.external``: a value
  computed elsewhere in the step, e.g. a constant drive or a value read from another
  population without a weight);
* :class:`SignalKey` -- the presynaptic signal one weight reads from its source population,
  sent within the step or read at its start (the previous step's value).

:data:`ENV` and :data:`GLOBAL` name the sections of the network state that are not
populations: the environment's ``i``/``t`` and the states shared by the whole step (such
as brainstate's random state).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ENV", "GLOBAL", "InputKey", "SignalKey"]

#: The network-state section holding brainstate's environment ``i`` and ``t``, per sample.
ENV = "__env__"
#: The network-state section holding states that belong to no population.
GLOBAL = "__global__"


class InputKey(NamedTuple):
    """A key of a population's ``u``: the input a weight delivers to its target population
    (its channel; :meth:`weight`), or an input of the population's transition that is
    neither its own state nor the output of one of its weights, by the id of its value in
    the traced step (:meth:`external`).

    Example:
        >>> InputKey.weight("inp.comm.weight").label, InputKey.external(12).label
        ('w:inp.comm.weight', 'ext:12')
    """

    kind: str  # "w": a weight's input, "ext": an external input
    source: str | int  # the weight's name, or the value's id

    @classmethod
    def weight(cls, name: str) -> InputKey:
        """The input weight ``name`` delivers (the key of its channel too)."""
        return cls("w", name)

    @classmethod
    def external(cls, node: int) -> InputKey:
        """The external input that is value ``node`` of the traced step."""
        return cls("ext", node)

    @property
    def label(self) -> str:
        """The key of this input in the population's ``u``."""
        return f"{self.kind}:{self.source}"


class SignalKey(NamedTuple):
    """The presynaptic signal weight ``weight`` reads from its source population: sent
    within the step (``delay=0``) or read at its start, the previous step's (``delay=1``).

    Example:
        >>> SignalKey("rec.comm.weight", 1).label
        'prev:rec.comm.weight'
    """

    weight: str
    delay: int

    @property
    def label(self) -> str:
        """The signal's name in the population's signals (a projection's ``signal``)."""
        return f"{'prev' if self.delay else 'sig'}:{self.weight}"
