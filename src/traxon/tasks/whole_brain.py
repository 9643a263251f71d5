r"""Whole-brain region-rate fitting: drive a connectome network with a stimulus and fit the
mean firing rate of every region to a target rate trace, online.

Each sequence has a stimulus of ``n_in`` Poisson channels whose rates are smooth random
traces, and a target rate trace per region (Hz). Synthetic targets are a fixed random
function of the stimulus (so they can be fitted):

.. math::
    \rho_t = \bar\rho + \Delta\rho \tanh\big(M\, (\lambda_t - \bar\lambda) / \bar\lambda\big)

with :math:`\lambda_t` the stimulus rates (smoothed over ``smooth_ms``) and :math:`M` a fixed
random ``(R, n_in)`` matrix drawn from ``task_seed``. Real targets come from an array file
(:func:`load_targets`): the task then cuts aligned crops of the recording (and of its
stimulus, if the file has one).

The loss is evaluated at the end of every window of ``window`` steps (``mask`` is 1 there):
:func:`region_rate_loss` compares each region's rate -- the network's readout, an
exponential average over about ``window`` steps of the region's mean spike count, in Hz (see
:func:`traxon.connectome.connectome_network`) -- with the target, in units of ``scale`` Hz.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from traxon._loss import Loss
from traxon.tasks.base import Batch, Task, check_float, check_int

__all__ = ["RegionRates", "load_targets", "region_rate_loss"]


def region_rate_loss(scale: float = 10.0) -> Loss:
    r"""Mean squared error of region rates in units of ``scale`` Hz:
    :math:`l = \frac{1}{R} \sum_r ((y_r - \rho_r) / \text{scale})^2`, targets ``(B, R)``.

    Use with the task's ``mask`` (1 at the end of each window).

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.tasks.whole_brain import region_rate_loss
        >>> region_rate_loss(10.0).fn(jnp.array([[20.0, 10.0]]), jnp.array([[10.0, 10.0]]))
        Array([0.5], dtype=float32)
    """
    scale = check_float(scale, "scale", minimum=0.0, strict=True)

    def fn(output: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.mean(jnp.square((output - target) / scale), axis=-1)

    return Loss("region_rate", fn, "regression", lambda b, n: jnp.zeros((b, n)))


def load_targets(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read region target rates (Hz) from ``.npy`` or ``.npz``.

    A ``.npy`` file holds the targets ``(T, R)``; a ``.npz`` file holds ``targets`` ``(T, R)``
    and optionally ``inputs`` ``(T, n_in)`` (the stimulus rates in Hz at each step).

    Returns:
        ``(targets, inputs)`` as float32 (``inputs`` is ``None`` if absent).

    Example:
        >>> import os, tempfile, numpy as np
        >>> from traxon.tasks.whole_brain import load_targets
        >>> path = os.path.join(tempfile.mkdtemp(), "rates.npy")
        >>> np.save(path, np.full((100, 3), 5.0))
        >>> targets, inputs = load_targets(path)
        >>> targets.shape, inputs is None
        ((100, 3), True)
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no target file at {path!r}.")
    inputs = None
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            if "targets" not in data:
                raise ValueError(
                    f"{os.path.basename(path)!r} must hold an array `targets` (T, R); it has "
                    f"{sorted(data.files)}."
                )
            targets = np.asarray(data["targets"], np.float32)
            if "inputs" in data:
                inputs = np.asarray(data["inputs"], np.float32)
    elif path.endswith(".npy"):
        targets = np.asarray(np.load(path, allow_pickle=False), np.float32)
    else:
        raise ValueError(f"target files are .npy or .npz; got {os.path.basename(path)!r}.")
    # Any finite signal, as RegionRates(targets=...) takes: rates in Hz, or e.g. dF/F,
    # which is negative below baseline.
    if targets.ndim != 2 or not np.all(np.isfinite(targets)):
        raise ValueError(
            f"`targets` must be finite values (rates in Hz, or a signal such as dF/F) of "
            f"shape (T, R); got shape {targets.shape}"
            + ("." if targets.ndim != 2 else ", with non-finite values.")
        )
    if inputs is not None and (
        inputs.ndim != 2 or inputs.shape[0] != targets.shape[0] or np.any(inputs < 0)
    ):
        raise ValueError(
            f"`inputs` must be non-negative rates of shape (T={targets.shape[0]}, n_in); got "
            f"{inputs.shape}."
        )
    return targets, inputs


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], steps: int) -> np.ndarray:
    """Unit-variance noise low-pass filtered over ``steps`` (time is axis 0)."""
    a = float(np.exp(-1.0 / max(steps, 1)))
    x = rng.normal(size=shape)
    out = np.empty(shape)
    acc = rng.normal(size=shape[1:])
    scale = np.sqrt(1.0 - a * a)
    for t in range(shape[0]):
        acc = a * acc + scale * x[t]
        out[t] = acc
    return out


class RegionRates(Task):
    """Fit every region's firing rate to a target trace (see the module docstring).

    Arguments:
        n_regions: number of regions ``R`` (ignored with ``targets``).
        n_in: stimulus channels.
        n_steps: steps per sequence.
        window: steps per loss window (the mask is 1 at the end of each).
        dt: step (ms).
        input_rate: mean stimulus rate (Hz); rates vary smoothly around it.
        rate_mean, rate_range: synthetic targets lie in ``rate_mean +- rate_range`` Hz.
        smooth_ms: smoothing time of the stimulus and target traces (ms).
        task_seed: seed of the fixed stimulus-to-target map.
        targets, inputs: a recording (from :func:`load_targets`): ``(T_rec, R)`` target
            rates and optional ``(T_rec, n_in)`` stimulus rates; sequences are aligned
            crops of it.
        n_test: size of the fixed evaluation set.
        burn_in: steps at the start of every sequence without a loss (the mask is 0 there):
            the readout's average starts at 0 Hz and needs a few ``rate_window`` to settle.

    Baselines: :meth:`baselines` scores trivial predictors (the training targets' mean
    rate, each region's training mean) on a held-out batch in the units of
    :func:`region_rate_loss`, and :meth:`explained_variance` turns a loss into the fraction
    of the target's variance explained beyond each region's mean.

    Example:
        >>> from traxon.tasks import RegionRates
        >>> task = RegionRates(n_regions=5, n_in=8, n_steps=200, window=50)
        >>> b = task.sample(0, batch_size=2)
        >>> b.x.shape, b.y.shape, b.mask.sum(0).tolist()
        ((200, 2, 8), (200, 2, 5), [4.0, 4.0])
    """

    name: ClassVar[str] = "region_rates"
    kind: ClassVar[str] = "regression"

    def __init__(
        self,
        n_regions: int = 80,
        n_in: int = 16,
        n_steps: int = 500,
        window: int = 50,
        dt: float = 1.0,
        input_rate: float = 50.0,
        rate_mean: float = 15.0,
        rate_range: float = 10.0,
        smooth_ms: float = 100.0,
        task_seed: int = 0,
        targets: Any = None,
        inputs: Any = None,
        n_test: int = 16,
        burn_in: int = 0,
    ) -> None:
        self.n_in = check_int(n_in, "n_in", minimum=1)
        self.n_steps = check_int(n_steps, "n_steps", minimum=1)
        self.window = check_int(window, "window", minimum=1)
        if self.window > self.n_steps:
            raise ValueError(
                f"`window` ({self.window}) must not exceed `n_steps` ({self.n_steps})."
            )
        self.burn_in = check_int(burn_in, "burn_in", minimum=0)
        if self.burn_in + self.window > self.n_steps:
            raise ValueError(
                f"`burn_in` + `window` ({self.burn_in} + {self.window}) must not exceed "
                f"`n_steps` ({self.n_steps}): no window would be scored."
            )
        self.dt = check_float(dt, "dt", minimum=0.0, strict=True)
        self.input_rate = check_float(input_rate, "input_rate", minimum=0.0)
        if self.input_rate * self.dt / 1000.0 * 2.0 > 1.0:
            raise ValueError(
                f"`input_rate` * 2 * dt / 1000 must be <= 1 (a spike probability); got "
                f"{self.input_rate} Hz."
            )
        self.rate_mean = check_float(rate_mean, "rate_mean", minimum=0.0)
        self.rate_range = check_float(rate_range, "rate_range", minimum=0.0)
        if self.rate_range > self.rate_mean:
            raise ValueError(
                f"`rate_range` ({self.rate_range}) must not exceed `rate_mean` "
                f"({self.rate_mean}): rates are non-negative."
            )
        self.smooth = max(1, round(check_float(smooth_ms, "smooth_ms", minimum=0.0) / self.dt))
        self.n_test = check_int(n_test, "n_test", minimum=1)
        self.recorded: np.ndarray | None = None
        self.recorded_inputs: np.ndarray | None = None
        if targets is not None:
            rec = np.asarray(targets, np.float32)
            if rec.ndim != 2 or rec.shape[0] < self.n_steps or not np.all(np.isfinite(rec)):
                raise ValueError(
                    f"`targets` must be finite, of shape (T_rec >= n_steps={self.n_steps}, R); "
                    f"got {rec.shape}" + ("." if np.all(np.isfinite(rec)) else ", not finite.")
                )
            self.recorded = rec
            n_regions = rec.shape[1]
            if inputs is not None:
                inp = np.asarray(inputs, np.float32)
                if inp.shape != (rec.shape[0], self.n_in):
                    raise ValueError(
                        f"`inputs` must have shape (T_rec={rec.shape[0]}, n_in={self.n_in}); "
                        f"got {inp.shape}."
                    )
                self.recorded_inputs = inp
        elif inputs is not None:
            raise ValueError("`inputs` (a recorded stimulus) needs `targets`.")
        self.n_out = check_int(n_regions, "n_regions", minimum=1)
        rng = np.random.default_rng(check_int(task_seed, "task_seed", minimum=0))
        self._map = rng.normal(size=(self.n_out, self.n_in)) * (2.0 / np.sqrt(self.n_in))

    def mask(self, batch_size: int) -> np.ndarray:
        """``(T, B)`` float32: 1.0 at the last step of every window after ``burn_in``."""
        m = np.zeros((self.n_steps, batch_size), np.float32)
        m[self.burn_in + self.window - 1 :: self.window] = 1.0
        return m

    @staticmethod
    def score(predictions: Any, batch: Batch, scale: float = 10.0) -> float:
        """The loss of :func:`region_rate_loss` (``scale`` Hz) of ``predictions`` on
        ``batch``, averaged over its masked steps as ``OnlineLearner.evaluate`` does.

        Arguments:
            predictions: rates (Hz) broadcastable to ``batch.y`` ``(T, B, R)``.
            batch: a batch of this task (targets ``y``, ``mask``).

        Example:
            >>> import numpy as np
            >>> from traxon.tasks import RegionRates
            >>> b = RegionRates(n_regions=3, n_steps=100, window=50).sample(0, 2)
            >>> RegionRates.score(b.y, b)
            0.0
        """
        scale = check_float(scale, "scale", minimum=0.0, strict=True)
        y = np.asarray(batch.y, np.float64)
        pred = np.broadcast_to(np.asarray(predictions, np.float64), y.shape)
        m = np.asarray(batch.mask, np.float64)
        per_step = np.mean(np.square((pred - y) / scale), axis=-1)
        return float(np.sum(per_step * m) / max(float(np.sum(m)), 1.0))

    def baselines(
        self, test: Batch, train: Batch | Sequence[Batch], scale: float = 10.0
    ) -> dict[str, float]:
        """Losses of trivial predictors on the held-out ``test`` batch, in the units of
        :func:`region_rate_loss` (``scale`` Hz), fitted on the masked steps of ``train``.

        Returns:
            ``{"constant": ..., "region_mean": ...}``: the loss of predicting the training
            targets' mean rate for every region at every step, and of predicting each
            region's own training mean. A model that has learnt the stimulus-driven part
            of the targets scores below both (see :meth:`explained_variance`).

        Example:
            >>> from traxon.tasks import RegionRates
            >>> task = RegionRates(n_regions=4, n_steps=200, window=50)
            >>> base = task.baselines(task.sample(0, 2, "test"), task.sample(0, 8))
            >>> sorted(base)
            ['constant', 'region_mean']
        """
        batches = [train] if isinstance(train, Batch) else list(train)
        if not batches:
            raise ValueError("`train` must hold at least one batch.")
        total = np.zeros(self.n_out)
        count = 0.0
        for b in batches:
            y = np.asarray(b.y, np.float64)
            if y.ndim != 3 or y.shape[-1] != self.n_out:
                raise ValueError(
                    f"training targets must have shape (T, B, R={self.n_out}); got {y.shape}."
                )
            m = np.asarray(b.mask, np.float64)
            total += np.einsum("tbr,tb->r", y, m)
            count += float(np.sum(m))
        if count == 0.0:
            raise ValueError("`train` has no masked steps: no targets to average.")
        region_mean = total / count
        return {
            "constant": self.score(np.mean(region_mean), test, scale),
            "region_mean": self.score(region_mean, test, scale),
        }

    @staticmethod
    def explained_variance(loss: float, region_mean_loss: float) -> float:
        r"""The fraction of the target's variance explained beyond each region's mean:
        :math:`1 - \text{loss} / \text{loss}_\text{region mean}` (1: perfect; 0: no better than
        each region's mean; negative: worse).

        Example:
            >>> from traxon.tasks import RegionRates
            >>> RegionRates.explained_variance(0.1, 0.4)
            0.75
        """
        loss = check_float(loss, "loss", minimum=0.0)
        base = check_float(region_mean_loss, "region_mean_loss", minimum=0.0, strict=True)
        return 1.0 - loss / base

    def _draw(
        self, rng: np.random.Generator, batch_size: int, split: str
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        T, B = self.n_steps, batch_size
        info: dict[str, np.ndarray] = {}
        if self.recorded is not None:
            offset = rng.integers(0, self.recorded.shape[0] - T + 1, B)
            idx = offset[None, :] + np.arange(T)[:, None]
            y = self.recorded[idx]  # (T, B, R)
            if self.recorded_inputs is not None:
                rates = self.recorded_inputs[idx]
            else:
                rates = np.full((T, B, self.n_in), self.input_rate, np.float32)
            info["offset"] = offset
        else:
            wiggle = np.tanh(_smooth_noise(rng, (T, B, self.n_in), self.smooth))
            rates = self.input_rate * (1.0 + wiggle)
            drive = np.einsum("ri,tbi->tbr", self._map, wiggle)
            y = self.rate_mean + self.rate_range * np.tanh(drive)
        p = rates * self.dt / 1000.0
        x = (rng.random((T, B, self.n_in)) < p).astype(np.float32)
        batch = Batch(
            x=x,
            y=np.asarray(y, np.float32),
            mask=self.mask(B),
            label=np.zeros(B, np.int32),
        )
        info["input_rates"] = np.asarray(rates, np.float32)
        return batch, info
