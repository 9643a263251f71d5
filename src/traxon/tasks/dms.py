"""Delayed match-to-sample with direction-tuned Poisson inputs.

A sample direction is shown, then removed for a delay; then a test direction is shown and the
network must say whether it matches the sample (label 1) or not (label 0).

Timeline (``dt`` ms per step)::

    | fixation | sample |       delay       | test |
     baseline   tuned     baseline            tuned

Input channel ``j`` has preferred direction ``2 pi j / n_channels`` and fires Poisson at
``baseline_hz + max_rate_hz * exp(kappa_tuning * (cos(theta - pref_j) - 1))`` while direction
``theta`` is shown (a von Mises bump that peaks at ``baseline_hz + max_rate_hz``), and at
``baseline_hz`` otherwise. Stimulus directions are the ``n_directions`` angles
``2 pi k / n_directions``.
"""

from __future__ import annotations

import numpy as np

from traxon.tasks.base import Batch, Task, check_float, check_int, ms_to_steps, poisson_batch

__all__ = ["DelayedMatchToSample"]


class DelayedMatchToSample(Task):
    """Delayed match-to-sample: is the test direction the sample direction?

    The test direction equals the sample with probability ``match_prob`` (label 1, "match"),
    otherwise it is one of the other ``n_directions - 1`` directions uniformly (label 0). The
    target ``y`` is the label at every step; ``mask`` is 1 during the test window only.

    Arguments:
        n_channels: number of direction-tuned input channels (``n_in``).
        n_directions: number of discrete stimulus directions (>= 2).
        kappa_tuning: von Mises concentration of the tuning curves (>= 0).
        max_rate_hz: peak rate above baseline (at the preferred direction).
        baseline_hz: rate of every channel when no stimulus is shown, and the floor of the
            tuning curves.
        fixation_ms: baseline-only time before the sample.
        sample_ms: sample period (at least one step).
        delay_ms: baseline-only delay (several seconds are fine).
        test_ms: test period (at least one step).
        match_prob: probability that the test direction matches the sample.
        dt: step length in ms; all durations must be multiples of it.
        n_test: number of sequences in the fixed evaluation set of :meth:`epoch`.

    ``sample_with_info`` returns ``info["sample_direction"]`` and ``info["test_direction"]``,
    ``(B,)`` int32 direction indices; :attr:`sample_window` and :attr:`test_window` give the
    ``(start, stop)`` steps of the two stimulus periods.

    Example:
        >>> from traxon.tasks import DelayedMatchToSample
        >>> task = DelayedMatchToSample(fixation_ms=20, sample_ms=50, delay_ms=100, test_ms=50)
        >>> task.n_in, task.n_out, task.n_steps, task.sample_window, task.test_window
        (32, 2, 220, (20, 70), (170, 220))
        >>> batch, info = task.sample_with_info(3, batch_size=16)
        >>> match = info["sample_direction"] == info["test_direction"]
        >>> bool((match == batch.label).all()), float(batch.mask[:170].sum())
        (True, 0.0)
    """

    name = "dms"
    kind = "classification"
    _config_keys = "n_channels n_directions fixation_ms sample_ms delay_ms test_ms dt"

    def __init__(
        self,
        n_channels: int = 32,
        n_directions: int = 8,
        kappa_tuning: float = 2.0,
        max_rate_hz: float = 40.0,
        baseline_hz: float = 2.0,
        fixation_ms: float = 100.0,
        sample_ms: float = 300.0,
        delay_ms: float = 1000.0,
        test_ms: float = 300.0,
        match_prob: float = 0.5,
        dt: float = 1.0,
        n_test: int = 512,
    ) -> None:
        self.n_channels = check_int(n_channels, "n_channels", minimum=1)
        self.n_directions = check_int(n_directions, "n_directions", minimum=2)
        self.kappa_tuning = check_float(kappa_tuning, "kappa_tuning", minimum=0.0)
        self.max_rate_hz = check_float(max_rate_hz, "max_rate_hz", minimum=0.0)
        self.baseline_hz = check_float(baseline_hz, "baseline_hz", minimum=0.0)
        self.dt = check_float(dt, "dt", minimum=0.0, strict=True)
        self.fixation_ms = check_float(fixation_ms, "fixation_ms", minimum=0.0)
        self.sample_ms = check_float(sample_ms, "sample_ms", minimum=0.0, strict=True)
        self.delay_ms = check_float(delay_ms, "delay_ms", minimum=0.0)
        self.test_ms = check_float(test_ms, "test_ms", minimum=0.0, strict=True)
        self.match_prob = check_float(match_prob, "match_prob", minimum=0.0, maximum=1.0)
        self.n_test = check_int(n_test, "n_test", minimum=1)

        fixation = ms_to_steps(self.fixation_ms, self.dt, "fixation_ms")
        sample = ms_to_steps(self.sample_ms, self.dt, "sample_ms", minimum_steps=1)
        delay = ms_to_steps(self.delay_ms, self.dt, "delay_ms")
        test = ms_to_steps(self.test_ms, self.dt, "test_ms", minimum_steps=1)
        peak_p = (self.baseline_hz + self.max_rate_hz) * self.dt / 1000.0
        if peak_p > 1.0:
            raise ValueError(
                f"`max_rate_hz` + `baseline_hz` times `dt` / 1000 is the peak spike probability "
                f"per step and must be <= 1; got ({self.max_rate_hz:g} + {self.baseline_hz:g}) Hz "
                f"* {self.dt:g} ms / 1000 = {peak_p:g}. Lower the rates or `dt`."
            )
        self.sample_window: tuple[int, int] = (fixation, fixation + sample)
        self.test_window: tuple[int, int] = (
            fixation + sample + delay,
            fixation + sample + delay + test,
        )
        self.n_steps = self.test_window[1]
        self.n_in = self.n_channels
        self.n_out = 2
        # (n_directions, n_channels) per-step spike probability while a direction is shown
        self._p_tuned = (self.tuning() * (self.dt / 1000.0)).astype(np.float32)
        self._p_base = np.float32(self.baseline_hz * self.dt / 1000.0)

    @property
    def preferred_angles(self) -> np.ndarray:
        """Preferred direction of each input channel, in radians.

        Returns:
            ``(n_channels,)`` float64 angles ``2 pi j / n_channels``.

        Example:
            >>> from traxon.tasks import DelayedMatchToSample
            >>> DelayedMatchToSample(n_channels=4).preferred_angles.round(3).tolist()
            [0.0, 1.571, 3.142, 4.712]
        """
        return 2.0 * np.pi * np.arange(self.n_channels) / self.n_channels

    @property
    def direction_angles(self) -> np.ndarray:
        """The stimulus directions, in radians.

        Returns:
            ``(n_directions,)`` float64 angles ``2 pi k / n_directions``.

        Example:
            >>> from traxon.tasks import DelayedMatchToSample
            >>> DelayedMatchToSample(n_directions=4).direction_angles.round(3).tolist()
            [0.0, 1.571, 3.142, 4.712]
        """
        return 2.0 * np.pi * np.arange(self.n_directions) / self.n_directions

    def tuning(self) -> np.ndarray:
        """Firing rate (Hz) of every channel for every stimulus direction.

        Returns:
            ``(n_directions, n_channels)`` float64 rates
            ``baseline_hz + max_rate_hz * exp(kappa_tuning * (cos(theta_k - pref_j) - 1))``.

        Example:
            >>> from traxon.tasks import DelayedMatchToSample
            >>> rates = DelayedMatchToSample(n_channels=8, n_directions=8).tuning()
            >>> rates.shape, float(rates[0, 0]), int(rates[3].argmax())
            ((8, 8), 42.0, 3)
        """
        diff = self.direction_angles[:, None] - self.preferred_angles[None, :]
        bump = np.exp(self.kappa_tuning * (np.cos(diff) - 1.0))
        return self.baseline_hz + self.max_rate_hz * bump

    def _draw(
        self, rng: np.random.Generator, batch_size: int, split: str
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        b, n_steps = batch_size, self.n_steps
        sample_dir = rng.integers(0, self.n_directions, size=b).astype(np.int32)
        match = rng.random(b) < self.match_prob
        shift = rng.integers(1, self.n_directions, size=b)
        test_dir = np.where(match, sample_dir, (sample_dir + shift) % self.n_directions)
        test_dir = test_dir.astype(np.int32)
        label = match.astype(np.int32)

        prob = np.full((n_steps, b, self.n_in), self._p_base, np.float32)
        s0, s1 = self.sample_window
        t0, t1 = self.test_window
        prob[s0:s1] = self._p_tuned[sample_dir][None]
        prob[t0:t1] = self._p_tuned[test_dir][None]
        batch = poisson_batch(rng, prob, label, self.test_window)
        return batch, {"sample_direction": sample_dir, "test_direction": test_dir}
