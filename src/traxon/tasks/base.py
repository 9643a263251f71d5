"""The common interface of traxon's tasks: :class:`Batch` and the abstract :class:`Task`.

Every task produces time-major numpy batches (``T`` steps, ``B`` sequences):

* ``x`` -- ``(T, B, n_in)`` float32 inputs (spikes 0/1, or counts/values),
* ``y`` -- ``(T, B)`` int32 class targets (classification) or ``(T, B, n_out)`` float32
  targets (regression),
* ``mask`` -- ``(T, B)`` float32, 1.0 where the target counts in the loss,
* ``label`` -- ``(B,)`` int32 class label of each sequence (zeros for regression).

Randomness is explicit. ``sample(rng, batch_size, split)`` takes either a
``numpy.random.Generator`` (used as is) or an integer seed; an integer seed is combined with
the split, so ``sample(3, 8, "train")`` and ``sample(3, 8, "test")`` come from disjoint seed
streams. ``stream(seed, ...)`` yields an endless reproducible sequence of batches (its first
batch equals ``sample(seed, ...)``), and ``epoch(batch_size, split)`` yields a fixed evaluation
set: every example of the split once for datasets, and a fixed seeded set of ``n_test``
sequences for generated tasks. The evaluation seeds live in their own stream, disjoint from
every user seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, NamedTuple

import numpy as np

__all__ = ["Batch", "Task"]

SPLITS: tuple[str, ...] = ("train", "test")
"""The splits every task knows, in the order of their seed-stream ids."""

_SAMPLE_TAG = 0  # seed streams of ``sample``/``stream`` (user seeds)
_EPOCH_TAG = 1  # seed streams of ``epoch`` (fixed evaluation sets)
_EPOCH_ENTROPY = 0x7472_6178  # fixed entropy of the evaluation sets ("trax")
_EPOCH_CHUNK = 64  # evaluation sets are generated in chunks of this many sequences


class Batch(NamedTuple):
    """One time-major batch of sequences.

    Attributes:
        x: ``(T, B, n_in)`` float32 inputs -- spikes (0/1), spike counts or values.
        y: ``(T, B)`` int32 class target per step (classification), or ``(T, B, n_out)``
            float32 target values (regression).
        mask: ``(T, B)`` float32; 1.0 at steps whose target counts in the loss, else 0.0.
        label: ``(B,)`` int32 class label of each sequence (zeros for regression tasks).

    Example:
        >>> import numpy as np
        >>> from traxon.tasks import Batch
        >>> b = Batch(
        ...     x=np.zeros((5, 2, 3), np.float32),
        ...     y=np.zeros((5, 2), np.int32),
        ...     mask=np.ones((5, 2), np.float32),
        ...     label=np.zeros(2, np.int32),
        ... )
        >>> b.x.shape, b.label.dtype.name
        ((5, 2, 3), 'int32')
    """

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    label: np.ndarray


# ---------------------------------------------------------------------------------------------
# argument checks (numpy only; messages name the argument, show the value and say what is allowed)


def _fmt(value: float) -> str:
    return f"{value:g}"


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int``; ``TypeError`` if it is not an integer, ``ValueError`` if
    it is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer; got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {value}.")
    return value


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    strict: bool = False,
    maximum: float | None = None,
) -> float:
    """Return ``value`` as a finite ``float`` in range; ``TypeError``/``ValueError`` otherwise.

    ``strict=True`` excludes ``minimum`` itself (``> minimum`` instead of ``>= minimum``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number; got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite; got {value}.")
    if minimum is not None:
        if strict and value <= minimum:
            raise ValueError(f"`{name}` must be > {_fmt(minimum)}; got {value}.")
        if not strict and value < minimum:
            raise ValueError(f"`{name}` must be >= {_fmt(minimum)}; got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {_fmt(maximum)}; got {value}.")
    return value


def check_choice(value: Any, name: str, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``; ``ValueError`` listing them otherwise."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"`{name}` must be one of {shown}; got {value!r}.")
    return value


def ms_to_steps(ms: Any, dt: float, name: str, *, minimum_steps: int = 0) -> int:
    """Convert a duration in ms to a whole number of steps of ``dt`` ms.

    The duration must be a multiple of ``dt`` and last at least ``minimum_steps`` steps.
    """
    ms = check_float(ms, name, minimum=0.0)
    steps = round(ms / dt)
    if abs(steps * dt - ms) > 1e-6 * max(1.0, ms):
        raise ValueError(f"`{name}` must be a multiple of `dt` ({_fmt(dt)} ms); got {ms}.")
    if steps < minimum_steps:
        raise ValueError(
            f"`{name}` must last at least {minimum_steps} step(s) of `dt` ({_fmt(dt)} ms), "
            f"i.e. be >= {_fmt(minimum_steps * dt)}; got {ms}."
        )
    return steps


def rate_to_prob(rate_hz: Any, dt: float, name: str) -> float:
    """Per-step spike probability ``rate_hz * dt / 1000`` of a Poisson (Bernoulli) channel."""
    rate_hz = check_float(rate_hz, name, minimum=0.0)
    p = rate_hz * dt / 1000.0
    if p > 1.0:
        raise ValueError(
            f"`{name}` * `dt` / 1000 is a spike probability per step and must be <= 1; got "
            f"{_fmt(rate_hz)} Hz * {_fmt(dt)} ms / 1000 = {_fmt(p)}. Lower the rate or `dt`."
        )
    return p


def readout_mask(n_steps: int, batch_size: int, readout_steps: int) -> np.ndarray:
    """``(T, B)`` float32 mask that is 1.0 on the last ``readout_steps`` steps."""
    mask = np.zeros((n_steps, batch_size), np.float32)
    mask[n_steps - readout_steps :] = 1.0
    return mask


def constant_target(label: np.ndarray, n_steps: int) -> np.ndarray:
    """``(T, B)`` int32 target that repeats each sequence's label at every step."""
    return np.ascontiguousarray(np.broadcast_to(label.astype(np.int32), (n_steps, label.shape[0])))


def check_readout_steps(readout_steps: Any, n_steps: int) -> int:
    """The number of steps a classification task reads out on (``None``: all ``n_steps``),
    checked to lie in ``[1, n_steps]``."""
    if readout_steps is None:
        return n_steps
    readout_steps = check_int(readout_steps, "readout_steps", minimum=1)
    if readout_steps > n_steps:
        raise ValueError(f"`readout_steps` must be <= `n_steps` ({n_steps}); got {readout_steps}.")
    return readout_steps


def poisson_batch(
    rng: np.random.Generator, prob: np.ndarray, label: np.ndarray, window: tuple[int, int]
) -> Batch:
    """A classification batch of Bernoulli spikes: ``prob`` ``(T, B, n_in)`` is each
    channel's spike probability per step; each sequence's ``label`` is the target at every
    step, scored in the steps ``window = (start, stop)`` only."""
    x = (rng.random(prob.shape, dtype=np.float32) < prob).astype(np.float32)
    mask = np.zeros(prob.shape[:2], np.float32)
    mask[window[0] : window[1]] = 1.0
    return Batch(x=x, y=constant_target(label, prob.shape[0]), mask=mask, label=label)


def labelled_batch(x: np.ndarray, label: np.ndarray, n_steps: int, readout_steps: int) -> Batch:
    """A classification batch: inputs ``x``, each sequence's ``label`` as the target at every
    step, read out on the last ``readout_steps`` steps."""
    return Batch(
        x=x,
        y=constant_target(label, n_steps),
        mask=readout_mask(n_steps, label.shape[0], readout_steps),
        label=label,
    )


# ---------------------------------------------------------------------------------------------
# batching helpers


def _concat(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    return Batch(
        x=np.concatenate([b.x for b in batches], axis=1),
        y=np.concatenate([b.y for b in batches], axis=1),
        mask=np.concatenate([b.mask for b in batches], axis=1),
        label=np.concatenate([b.label for b in batches], axis=0),
    )


def _take(batch: Batch, start: int, stop: int) -> Batch:
    return Batch(
        x=batch.x[:, start:stop],
        y=batch.y[:, start:stop],
        mask=batch.mask[:, start:stop],
        label=batch.label[start:stop],
    )


def _rebatch(chunks: Iterator[Batch], batch_size: int) -> Iterator[Batch]:
    """Regroup batches of any sizes into batches of ``batch_size`` (the last may be smaller)."""
    pending: list[Batch] = []
    count = 0
    for chunk in chunks:
        pending.append(chunk)
        count += chunk.label.shape[0]
        while count >= batch_size:
            merged = _concat(pending)
            yield _take(merged, 0, batch_size)
            count -= batch_size
            pending = [_take(merged, batch_size, batch_size + count)] if count else []
    if count:
        yield _concat(pending)


class Task:
    """Abstract base of traxon's seeded streaming tasks.

    Subclasses set the attributes below and implement ``_draw`` (a random batch from a
    ``Generator``) and ``_epoch_chunk`` (examples ``start:stop`` of the fixed evaluation set).

    Attributes:
        name: registry name of the task (``"evidence"``, ``"dms"``, ...).
        kind: ``"classification"`` or ``"regression"``.
        n_in: number of input channels.
        n_out: number of outputs (classes for classification).
        n_steps: sequence length ``T`` in steps.
        dt: step length in ms.
        n_test: (generated tasks) size of the fixed evaluation set ``epoch`` yields.

    Example:
        >>> from traxon.tasks import EvidenceAccumulation, Task
        >>> task = EvidenceAccumulation(n_cues=3, cue_ms=20, gap_ms=10, delay_ms=50, recall_ms=30)
        >>> isinstance(task, Task), task.kind, task.n_in, task.n_out, task.n_steps
        (True, 'classification', 40, 2, 170)
    """

    name: ClassVar[str] = "task"
    kind: ClassVar[str] = "classification"
    _config_keys: ClassVar[str] = ""
    """The attributes ``repr`` shows, separated by spaces (or override ``_config``)."""
    n_in: int
    n_out: int
    n_steps: int
    dt: float
    n_test: int

    # -- to implement -------------------------------------------------------------------------

    def _draw(
        self, rng: np.random.Generator, batch_size: int, split: str
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        raise NotImplementedError

    def _epoch_chunk(self, rng: np.random.Generator, start: int, stop: int, split: str) -> Batch:
        """Examples ``start:stop`` of the fixed evaluation set of ``split``.

        The default (generated tasks) draws ``stop - start`` fresh sequences from ``rng``,
        which ``epoch`` seeds per chunk from the fixed evaluation stream.
        """
        return self._draw(rng, stop - start, split)[0]

    def _check_split(self, split: Any) -> int:
        """Validate ``split`` and return its seed-stream id."""
        check_choice(split, "split", SPLITS)
        return SPLITS.index(split)

    def n_examples(self, split: str = "test") -> int:
        """Number of sequences ``epoch`` yields for ``split``.

        Arguments:
            split: ``"train"`` or ``"test"``.

        Returns:
            The size of the split for datasets, or ``n_test`` for generated tasks.

        Example:
            >>> from traxon.tasks import DelayedMatchToSample
            >>> DelayedMatchToSample(n_test=100).n_examples("test")
            100
        """
        self._check_split(split)
        return int(self.n_test)

    # -- public interface ---------------------------------------------------------------------

    def _generator(self, rng: Any, split_id: int) -> np.random.Generator:
        if isinstance(rng, np.random.Generator):
            return rng
        if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)):
            raise TypeError(
                f"`rng` must be a numpy.random.Generator or a non-negative integer seed; "
                f"got {rng!r}."
            )
        seed = check_int(rng, "rng", minimum=0)
        return np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(_SAMPLE_TAG, split_id))
        )

    def sample_with_info(
        self, rng: np.random.Generator | int, batch_size: int, split: str = "train"
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        """Draw one random batch together with the latent variables that generated it.

        Arguments:
            rng: a ``numpy.random.Generator`` (used, and advanced, as is) or a non-negative
                integer seed (combined with ``split``: the same seed gives identical arrays,
                and different splits use disjoint seed streams).
            batch_size: number of sequences ``B`` (>= 1).
            split: ``"train"`` or ``"test"``.

        Returns:
            ``(batch, info)``: the :class:`Batch` and a dict of per-sequence arrays that
            describe how it was made (each task documents its keys; e.g. ``"cues"`` for
            evidence accumulation, ``"index"`` for datasets).

        Example:
            >>> from traxon.tasks import EvidenceAccumulation
            >>> task = EvidenceAccumulation(n_cues=3, cue_ms=20, gap_ms=10, delay_ms=50)
            >>> batch, info = task.sample_with_info(0, batch_size=4)
            >>> info["cues"].shape
            (4, 3)
        """
        split_id = self._check_split(split)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        return self._draw(self._generator(rng, split_id), batch_size, split)

    def sample(
        self, rng: np.random.Generator | int, batch_size: int, split: str = "train"
    ) -> Batch:
        """Draw one random batch.

        Arguments:
            rng: a ``numpy.random.Generator`` (used, and advanced, as is) or a non-negative
                integer seed (deterministic: the same seed and split give identical arrays;
                different splits use disjoint seed streams).
            batch_size: number of sequences ``B`` (>= 1).
            split: ``"train"`` or ``"test"``.

        Returns:
            A :class:`Batch` with ``x`` of shape ``(n_steps, batch_size, n_in)``.

        Example:
            >>> import numpy as np
            >>> from traxon.tasks import DelayedMatchToSample
            >>> task = DelayedMatchToSample(delay_ms=200)
            >>> a, b = task.sample(7, 4), task.sample(7, 4)
            >>> a.x.shape, bool(np.array_equal(a.x, b.x))
            ((900, 4, 32), True)
        """
        return self.sample_with_info(rng, batch_size, split)[0]

    def stream(self, seed: int, batch_size: int, split: str = "train") -> Iterator[Batch]:
        """An endless, reproducible stream of random batches.

        Arguments:
            seed: non-negative integer seed; the stream is a pure function of
                ``(seed, split)``, and its first batch equals ``sample(seed, batch_size, split)``.
            batch_size: number of sequences per batch (>= 1).
            split: ``"train"`` or ``"test"``.

        Returns:
            An infinite iterator of :class:`Batch`.

        Example:
            >>> import itertools
            >>> from traxon.tasks import EvidenceAccumulation
            >>> task = EvidenceAccumulation(n_cues=3, cue_ms=20, gap_ms=10, delay_ms=50)
            >>> batches = list(itertools.islice(task.stream(seed=1, batch_size=2), 3))
            >>> [b.x.shape for b in batches]
            [(290, 2, 40), (290, 2, 40), (290, 2, 40)]
        """
        if isinstance(seed, np.random.Generator):
            raise TypeError(
                f"`seed` must be a non-negative integer (a stream owns its Generator); "
                f"got {seed!r}."
            )
        split_id = self._check_split(split)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        seed = check_int(seed, "seed", minimum=0)
        rng = self._generator(seed, split_id)

        def batches() -> Iterator[Batch]:
            while True:
                yield self._draw(rng, batch_size, split)[0]

        return batches()

    def epoch(self, batch_size: int, split: str = "test") -> Iterator[Batch]:
        """One pass over the fixed evaluation set of ``split``.

        For datasets this is every example of the split exactly once, in a fixed order. For
        generated tasks it is a fixed set of ``n_test`` sequences drawn from a fixed seed
        stream that is disjoint from every ``sample``/``stream`` seed. Random encodings (e.g.
        Poisson spikes) come from fixed seeds too, so every pass yields identical arrays,
        whatever ``batch_size`` is.

        Arguments:
            batch_size: number of sequences per batch (>= 1); the last batch may be smaller.
            split: ``"train"`` or ``"test"``.

        Returns:
            A finite iterator of :class:`Batch`.

        Example:
            >>> from traxon.tasks import EvidenceAccumulation
            >>> task = EvidenceAccumulation(n_cues=3, cue_ms=20, gap_ms=10, delay_ms=50, n_test=10)
            >>> [b.label.shape[0] for b in task.epoch(batch_size=4)]
            [4, 4, 2]
        """
        split_id = self._check_split(split)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        n = self.n_examples(split)

        def chunks() -> Iterator[Batch]:
            for k, start in enumerate(range(0, n, _EPOCH_CHUNK)):
                rng = np.random.default_rng(
                    np.random.SeedSequence(_EPOCH_ENTROPY, spawn_key=(_EPOCH_TAG, split_id, k))
                )
                yield self._epoch_chunk(rng, start, min(start + _EPOCH_CHUNK, n), split)

        return _rebatch(chunks(), batch_size)

    def _config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._config_keys.split()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"
