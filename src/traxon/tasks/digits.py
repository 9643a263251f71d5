"""Spiking digits: scikit-learn's bundled 8x8 handwritten digits, encoded as spike trains.

The 1797 images of ``sklearn.datasets.load_digits`` (shipped with scikit-learn, no download)
become 64 input channels with intensities ``pixel / 16`` in ``[0, 1]``, encoded either as

* ``"rate"`` -- Bernoulli (Poisson) spikes with per-step probability
  ``intensity * max_rate_hz * dt / 1000``, fresh for every draw, or
* ``"latency"`` -- each pixel brighter than ``threshold`` spikes exactly once, at step
  ``round((1 - intensity) * (n_steps - 1))`` (bright pixels first); dimmer pixels never spike.

The held-out split is fixed: a stratified split with ``test_fraction`` of every class in the
test set, drawn from a fixed seed (0) independent of any user seed.
"""

from __future__ import annotations

import functools

import numpy as np

from traxon.tasks.base import (
    Batch,
    Task,
    check_choice,
    check_float,
    check_int,
    check_readout_steps,
    labelled_batch,
    rate_to_prob,
)

__all__ = ["SpikingDigits"]

_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'SpikingDigits needs scikit-learn (an optional extra): pip install "traxon[examples]"'
        ) from err
    data = load_digits()
    images = (np.asarray(data.data, np.float32) / 16.0).clip(0.0, 1.0)
    labels = np.asarray(data.target, np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(test_fraction * idx.size)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class SpikingDigits(Task):
    """The 8x8 scikit-learn digits as rate- or latency-coded spike trains (10 classes).

    ``sample(rng, B, split)`` draws ``B`` distinct random examples of the split (with
    replacement only when ``B`` exceeds the split size) and, for rate coding, fresh spikes.
    ``epoch(batch_size, split)`` visits every example of the split exactly once in dataset
    order, with spikes from fixed seeds (reproducible evaluation). The target ``y`` is the
    label at every step; ``mask`` is 1 on the last ``readout_steps`` steps.

    Arguments:
        encoding: ``"rate"`` or ``"latency"``.
        n_steps: sequence length in steps (>= 1).
        dt: step length in ms.
        max_rate_hz: rate of a fully white pixel under rate coding.
        threshold: latency coding: pixels with intensity ``<= threshold`` never spike.
        test_fraction: fraction of every class held out for the test split, in (0, 1).
        readout_steps: number of final steps with ``mask == 1``; ``None`` means all steps.

    ``sample_with_info`` returns ``info["index"]``, the ``(B,)`` indices of the examples in
    ``sklearn.datasets.load_digits()``; :meth:`indices` lists the examples of each split.

    Raises:
        ImportError: if scikit-learn is not installed (``pip install "traxon[examples]"``).

    Example:
        >>> from traxon.tasks import SpikingDigits
        >>> task = SpikingDigits(n_steps=20, readout_steps=5)
        >>> task.n_in, task.n_out, task.n_examples("train"), task.n_examples("test")
        (64, 10, 1438, 359)
        >>> batch = task.sample(0, batch_size=4, split="test")
        >>> batch.x.shape, batch.y.shape, float(batch.mask.sum(axis=0)[0])
        ((20, 4, 64), (20, 4), 5.0)
    """

    name = "digits"
    kind = "classification"
    _config_keys = "encoding n_steps dt max_rate_hz test_fraction readout_steps"

    def __init__(
        self,
        encoding: str = "rate",
        n_steps: int = 50,
        dt: float = 1.0,
        max_rate_hz: float = 200.0,
        threshold: float = 0.1,
        test_fraction: float = 0.2,
        readout_steps: int | None = None,
    ) -> None:
        self.encoding = check_choice(encoding, "encoding", ("rate", "latency"))
        self.n_steps = check_int(n_steps, "n_steps", minimum=1)
        self.dt = check_float(dt, "dt", minimum=0.0, strict=True)
        self.max_rate_hz = check_float(max_rate_hz, "max_rate_hz", minimum=0.0)
        self.threshold = check_float(threshold, "threshold", minimum=0.0, maximum=1.0)
        self.test_fraction = check_float(test_fraction, "test_fraction", minimum=0.0, strict=True)
        if self.test_fraction >= 1.0:
            raise ValueError(f"`test_fraction` must be < 1; got {self.test_fraction}.")
        self.readout_steps = check_readout_steps(readout_steps, self.n_steps)
        self._p_max = rate_to_prob(self.max_rate_hz, self.dt, "max_rate_hz")

        self._images, self._labels = _load_digits()
        train, test = _stratified_split(self._labels, self.test_fraction)
        if train.size == 0 or test.size == 0:
            raise ValueError(
                f"`test_fraction` = {self.test_fraction} leaves an empty split; choose a value "
                f"that keeps examples of every class on both sides (e.g. 0.2)."
            )
        self._split_indices = {"train": train, "test": test}
        self.n_in = 64
        self.n_out = 10

    def indices(self, split: str = "test") -> np.ndarray:
        """The examples of a split, as indices into ``sklearn.datasets.load_digits()``.

        Arguments:
            split: ``"train"`` or ``"test"``.

        Returns:
            Sorted int64 indices (a copy); the same for every instance and every seed.

        Example:
            >>> from traxon.tasks import SpikingDigits
            >>> SpikingDigits().indices("test").shape
            (359,)
        """
        self._check_split(split)
        return self._split_indices[split].copy()

    def n_examples(self, split: str = "test") -> int:
        """Number of examples in a split (what one :meth:`epoch` visits).

        Arguments:
            split: ``"train"`` or ``"test"``.

        Returns:
            The split size.

        Example:
            >>> from traxon.tasks import SpikingDigits
            >>> SpikingDigits(test_fraction=0.5).n_examples("test")
            898
        """
        self._check_split(split)
        return int(self._split_indices[split].size)

    def encode(self, images: np.ndarray, rng: np.random.Generator | int = 0) -> np.ndarray:
        """Encode intensities in ``[0, 1]`` as spike trains with this task's encoding.

        Arguments:
            images: ``(B, 64)`` intensities in ``[0, 1]``.
            rng: Generator or integer seed for rate coding (ignored by latency coding).

        Returns:
            ``(n_steps, B, 64)`` float32 spikes (0/1).

        Example:
            >>> import numpy as np
            >>> from traxon.tasks import SpikingDigits
            >>> task = SpikingDigits(encoding="latency", n_steps=11)
            >>> x = task.encode(np.array([[1.0, 0.5, 0.05] + [0.0] * 61]))
            >>> [int(np.flatnonzero(x[:, 0, i])[0]) for i in (0, 1)], float(x[:, 0, 2].sum())
            ([0, 5], 0.0)
        """
        images = np.asarray(images, np.float32)
        if images.ndim != 2 or images.shape[1] != self.n_in:
            raise ValueError(
                f"`images` must have shape (B, {self.n_in}); got {tuple(images.shape)}."
            )
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(check_int(rng, "rng", minimum=0))
        shape = (self.n_steps, *images.shape)
        if self.encoding == "rate":
            prob = images * np.float32(self._p_max)
            return (rng.random(shape, dtype=np.float32) < prob[None]).astype(np.float32)
        x = np.zeros(shape, np.float32)
        ex, ch = np.nonzero(images > self.threshold)
        steps = np.rint((1.0 - images[ex, ch]) * (self.n_steps - 1)).astype(np.int64)
        x[steps, ex, ch] = 1.0
        return x

    def _batch(self, rng: np.random.Generator, index: np.ndarray) -> Batch:
        label = self._labels[index].astype(np.int32)
        x = self.encode(self._images[index], rng)
        return labelled_batch(x, label, self.n_steps, self.readout_steps)

    def _draw(
        self, rng: np.random.Generator, batch_size: int, split: str
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        pool = self._split_indices[split]
        index = rng.choice(pool, size=batch_size, replace=batch_size > pool.size)
        return self._batch(rng, index), {"index": index}

    def _epoch_chunk(self, rng: np.random.Generator, start: int, stop: int, split: str) -> Batch:
        return self._batch(rng, self._split_indices[split][start:stop])
