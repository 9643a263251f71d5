"""Evidence (cue) accumulation, the working-memory task of e-prop (Bellec et al. 2020).

A trial shows ``n_cues`` cues, each on the left or the right with probability 0.5. After a
delay a recall signal asks the network which side had more cues.

Timeline (``dt`` ms per step)::

    | start | cue gap | cue gap | ... | cue gap |     delay     | recall |
      noise   n_cues x (cue_ms + gap_ms)           delay_ms        recall_ms

Input channels come in four groups of ``channels_per_group`` (10 by default, 40 in all):
left cue ``[0, g)``, right cue ``[g, 2g)``, recall ``[2g, 3g)`` and background noise
``[3g, 4g)``. During a cue the channels of that cue's side fire Poisson at ``cue_rate_hz``; the
recall channels fire at ``recall_rate_hz`` during the recall window only; the noise channels
fire at ``noise_rate_hz`` for the whole trial.
"""

from __future__ import annotations

import numpy as np

from traxon.tasks.base import (
    Batch,
    Task,
    check_float,
    check_int,
    ms_to_steps,
    poisson_batch,
    rate_to_prob,
)

__all__ = ["EvidenceAccumulation"]


class EvidenceAccumulation(Task):
    """Evidence accumulation over a delay: which side showed more cues?

    As in e-prop's task generator, each trial first picks a favoured side at random; each
    cue then lands on the other side with probability ``minority_prob`` (0.3), independently.
    ``minority_prob=0.5`` makes every cue a fair coin. The label is the side with more cues
    (``n_cues`` is odd, so there are no ties). The target ``y`` is the label at every step and
    ``mask`` is 1 only in the recall window. The defaults are the canonical e-prop setting
    (2200 steps of 1 ms).

    Arguments:
        n_cues: number of cues per trial (odd, >= 1).
        cue_ms: length of one cue in ms (at least one step).
        gap_ms: silence after each cue in ms.
        delay_ms: delay between the end of the last gap and the recall window, in ms.
        recall_ms: length of the recall window in ms (at least one step).
        start_ms: noise-only time before the first cue, in ms.
        dt: step length in ms; all durations must be multiples of it.
        cue_rate_hz: Poisson rate of the active cue channels.
        recall_rate_hz: Poisson rate of the recall channels during the recall window.
        noise_rate_hz: Poisson rate of the background-noise channels (whole trial).
        channels_per_group: channels in each of the four groups (``n_in = 4 * this``).
        minority_prob: probability that a cue lands on the trial's unfavoured side, in
            [0, 0.5] (0.5: independent fair cues).
        n_test: number of sequences in the fixed evaluation set of :meth:`epoch`.

    ``sample_with_info`` returns ``info["cues"]``, a ``(B, n_cues)`` int32 array of cue sides
    (0 = left, 1 = right); :attr:`cue_windows` and :attr:`recall_window` give the schedule.

    Example:
        >>> from traxon.tasks import EvidenceAccumulation
        >>> task = EvidenceAccumulation(n_cues=3, cue_ms=20, gap_ms=10, delay_ms=50, recall_ms=30)
        >>> task.n_steps, task.cue_windows, task.recall_window
        (170, ((0, 20), (30, 50), (60, 80)), (140, 170))
        >>> batch, info = task.sample_with_info(0, batch_size=8)
        >>> batch.x.shape, batch.y.shape
        ((170, 8, 40), (170, 8))
        >>> float(batch.mask[:140].sum()), float(batch.mask[140:].min())
        (0.0, 1.0)
        >>> bool(((info["cues"].sum(axis=1) >= 2) == batch.label).all())
        True
    """

    name = "evidence"
    kind = "classification"
    _config_keys = "n_cues cue_ms gap_ms delay_ms recall_ms start_ms dt minority_prob"

    def __init__(
        self,
        n_cues: int = 7,
        cue_ms: float = 100.0,
        gap_ms: float = 50.0,
        delay_ms: float = 1000.0,
        recall_ms: float = 150.0,
        start_ms: float = 0.0,
        dt: float = 1.0,
        cue_rate_hz: float = 40.0,
        recall_rate_hz: float = 40.0,
        noise_rate_hz: float = 10.0,
        channels_per_group: int = 10,
        minority_prob: float = 0.3,
        n_test: int = 512,
    ) -> None:
        self.n_cues = check_int(n_cues, "n_cues", minimum=1)
        if self.n_cues % 2 == 0:
            raise ValueError(
                f"`n_cues` must be odd (the label is the majority side, so an even count "
                f"could tie); got {self.n_cues}."
            )
        self.dt = check_float(dt, "dt", minimum=0.0, strict=True)
        self.cue_ms = check_float(cue_ms, "cue_ms", minimum=0.0, strict=True)
        self.gap_ms = check_float(gap_ms, "gap_ms", minimum=0.0)
        self.delay_ms = check_float(delay_ms, "delay_ms", minimum=0.0)
        self.recall_ms = check_float(recall_ms, "recall_ms", minimum=0.0, strict=True)
        self.start_ms = check_float(start_ms, "start_ms", minimum=0.0)
        self.cue_rate_hz = check_float(cue_rate_hz, "cue_rate_hz", minimum=0.0)
        self.recall_rate_hz = check_float(recall_rate_hz, "recall_rate_hz", minimum=0.0)
        self.noise_rate_hz = check_float(noise_rate_hz, "noise_rate_hz", minimum=0.0)
        self.channels_per_group = check_int(channels_per_group, "channels_per_group", minimum=1)
        self.minority_prob = check_float(minority_prob, "minority_prob", minimum=0.0)
        if self.minority_prob > 0.5:
            raise ValueError(f"`minority_prob` must lie in [0, 0.5]; got {minority_prob}.")
        self.n_test = check_int(n_test, "n_test", minimum=1)

        cue = ms_to_steps(self.cue_ms, self.dt, "cue_ms", minimum_steps=1)
        gap = ms_to_steps(self.gap_ms, self.dt, "gap_ms")
        delay = ms_to_steps(self.delay_ms, self.dt, "delay_ms")
        recall = ms_to_steps(self.recall_ms, self.dt, "recall_ms", minimum_steps=1)
        start = ms_to_steps(self.start_ms, self.dt, "start_ms")
        self._p_cue = rate_to_prob(self.cue_rate_hz, self.dt, "cue_rate_hz")
        self._p_recall = rate_to_prob(self.recall_rate_hz, self.dt, "recall_rate_hz")
        self._p_noise = rate_to_prob(self.noise_rate_hz, self.dt, "noise_rate_hz")

        self.cue_windows: tuple[tuple[int, int], ...] = tuple(
            (start + k * (cue + gap), start + k * (cue + gap) + cue) for k in range(self.n_cues)
        )
        recall_start = start + self.n_cues * (cue + gap) + delay
        self.recall_window: tuple[int, int] = (recall_start, recall_start + recall)
        self.n_steps = recall_start + recall
        self.n_in = 4 * self.channels_per_group
        self.n_out = 2

    # -- channel groups -----------------------------------------------------------------------

    @property
    def channel_groups(self) -> dict[str, range]:
        """The input channels of each group: ``"left"``, ``"right"``, ``"recall"``, ``"noise"``.

        Returns:
            A dict of ``range`` objects over channel indices.

        Example:
            >>> from traxon.tasks import EvidenceAccumulation
            >>> EvidenceAccumulation().channel_groups["recall"]
            range(20, 30)
        """
        g = self.channels_per_group
        return {
            "left": range(0, g),
            "right": range(g, 2 * g),
            "recall": range(2 * g, 3 * g),
            "noise": range(3 * g, 4 * g),
        }

    # -- generation ---------------------------------------------------------------------------

    def _draw(
        self, rng: np.random.Generator, batch_size: int, split: str
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        b, g, n_steps = batch_size, self.channels_per_group, self.n_steps
        favoured = rng.random((b, 1)) < 0.5  # True: the trial favours the right side
        minority = rng.random((b, self.n_cues)) < self.minority_prob
        cues = (favoured ^ minority).astype(np.int32)  # 1 = right
        label = (2 * cues.sum(axis=1) > self.n_cues).astype(np.int32)

        prob = np.zeros((n_steps, b, self.n_in), np.float32)
        prob[:, :, 3 * g :] = self._p_noise
        r0, r1 = self.recall_window
        prob[r0:r1, :, 2 * g : 3 * g] = self._p_recall
        for k, (s0, s1) in enumerate(self.cue_windows):
            right = cues[:, k] == 1
            prob[s0:s1, ~right, 0:g] = self._p_cue
            prob[s0:s1, right, g : 2 * g] = self._p_cue
        return poisson_batch(rng, prob, label, self.recall_window), {"cues": cues}
