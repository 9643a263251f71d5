"""Tests of traxon.tasks: seeded streaming tasks and data loaders (numpy only)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from traxon.tasks import (
    TASKS,
    Batch,
    DelayedMatchToSample,
    EvidenceAccumulation,
    SpikingDigits,
    SpikingHeidelbergDigits,
    Task,
    get_task,
    write_shd_file,
)

SHORT_EVIDENCE = {"n_cues": 3, "cue_ms": 20, "gap_ms": 10, "delay_ms": 50, "recall_ms": 30}
SHORT_DMS = {"fixation_ms": 20, "sample_ms": 50, "delay_ms": 100, "test_ms": 40}


# ---------------------------------------------------------------------------------------------
# fixtures


def _tiny_shd_data(seed: int, n: int = 6, n_classes: int = 3, n_channels: int = 20):
    rng = np.random.default_rng(seed)
    times, units = [], []
    for _ in range(n):
        k = int(rng.integers(5, 30))
        times.append(np.sort(rng.uniform(0.0, 1.2, size=k)))  # some beyond 1 s are dropped
        units.append(rng.integers(0, n_channels, size=k))
    labels = np.arange(n) % n_classes
    return times, units, labels


@pytest.fixture
def shd_files(tmp_path):
    pytest.importorskip("h5py")
    train = write_shd_file(tmp_path / "train.h5", *_tiny_shd_data(0))
    test = write_shd_file(tmp_path / "test.h5", *_tiny_shd_data(1, n=4))
    return train, test


def _make(kind: str, request) -> Task:
    if kind.startswith("digits"):
        pytest.importorskip("sklearn")
    if kind == "evidence":
        return EvidenceAccumulation(**SHORT_EVIDENCE, n_test=40)
    if kind == "dms":
        return DelayedMatchToSample(**SHORT_DMS, n_test=40)
    if kind == "digits-rate":
        return SpikingDigits(n_steps=20)
    if kind == "digits-latency":
        return SpikingDigits(encoding="latency", n_steps=20)
    if kind == "shd":
        train, test = request.getfixturevalue("shd_files")
        return SpikingHeidelbergDigits(train, test, n_steps=25, n_channels=20)
    raise AssertionError(kind)


KINDS = ["evidence", "dms", "digits-rate", "digits-latency", "shd"]


def _equal(a: Batch, b: Batch) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------
# the common interface


@pytest.mark.parametrize("kind", KINDS)
def test_batch_shapes_and_dtypes(kind, request):
    task = _make(kind, request)
    batch = task.sample(0, 5)
    assert isinstance(batch, Batch)
    t, n_in = task.n_steps, task.n_in
    assert batch.x.shape == (t, 5, n_in) and batch.x.dtype == np.float32
    assert batch.y.shape == (t, 5) and batch.y.dtype == np.int32
    assert batch.mask.shape == (t, 5) and batch.mask.dtype == np.float32
    assert batch.label.shape == (5,) and batch.label.dtype == np.int32
    assert task.kind == "classification"
    assert np.all((batch.label >= 0) & (batch.label < task.n_out))
    assert np.array_equal(batch.y, np.broadcast_to(batch.label, (t, 5)))
    assert set(np.unique(batch.mask)) <= {0.0, 1.0} and batch.mask.sum() > 0
    assert task.dt > 0
    if kind != "shd":
        assert set(np.unique(batch.x)) <= {0.0, 1.0}
    assert type(task).__name__ in repr(task)


@pytest.mark.parametrize("kind", KINDS)
def test_seeding(kind, request):
    task = _make(kind, request)
    a, b = task.sample(11, 6), task.sample(11, 6)
    assert _equal(a, b)
    assert not np.array_equal(a.x, task.sample(12, 6).x)
    assert not np.array_equal(a.x, task.sample(11, 6, split="test").x)
    # a Generator is used as is, and advanced
    rng = np.random.default_rng(5)
    c, d = task.sample(rng, 6), task.sample(rng, 6)
    assert not np.array_equal(c.x, d.x)
    assert _equal(c, task.sample(np.random.default_rng(5), 6))


@pytest.mark.parametrize("kind", KINDS)
def test_stream(kind, request):
    task = _make(kind, request)
    first = list(itertools.islice(task.stream(3, 4), 3))
    again = list(itertools.islice(task.stream(3, 4), 3))
    assert all(_equal(a, b) for a, b in zip(first, again, strict=True))
    assert _equal(first[0], task.sample(3, 4))
    assert not np.array_equal(first[0].x, first[1].x)
    other = next(task.stream(4, 4))
    test = next(task.stream(3, 4, split="test"))
    assert not np.array_equal(first[0].x, other.x)
    assert not np.array_equal(first[0].x, test.x)


@pytest.mark.parametrize("kind", KINDS)
def test_epoch_fixed_and_independent_of_batch_size(kind, request):
    task = _make(kind, request)
    n = task.n_examples("test")
    sizes = [b.label.shape[0] for b in task.epoch(7)]
    assert sum(sizes) == n and all(s == 7 for s in sizes[:-1]) and 0 < sizes[-1] <= 7

    def gather(batches):
        batches = list(batches)
        return (
            np.concatenate([b.x for b in batches], axis=1),
            np.concatenate([b.label for b in batches]),
            np.concatenate([b.mask for b in batches], axis=1),
        )

    x1, l1, m1 = gather(task.epoch(7))
    x2, l2, m2 = gather(task.epoch(64))
    x3, l3, _ = gather(_make(kind, request).epoch(n + 5))
    assert np.array_equal(x1, x2) and np.array_equal(l1, l2) and np.array_equal(m1, m2)
    assert np.array_equal(x1, x3) and np.array_equal(l1, l3)
    xt, _, _ = gather(task.epoch(16, split="train"))
    m = min(n, xt.shape[1])
    assert not np.array_equal(xt[:, :m], x1[:, :m])


def test_generated_epoch_differs_from_user_streams():
    task = EvidenceAccumulation(**SHORT_EVIDENCE, n_test=8)
    fixed = next(task.epoch(8)).x
    for seed in range(5):
        for split in ("train", "test"):
            assert not np.array_equal(fixed, task.sample(seed, 8, split=split).x)


@pytest.mark.parametrize("kind", KINDS)
def test_interface_argument_errors(kind, request):
    task = _make(kind, request)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0, 0)
    with pytest.raises(TypeError, match="batch_size"):
        task.sample(0, 2.5)
    with pytest.raises(ValueError, match="split"):
        task.sample(0, 2, split="valid")
    with pytest.raises(ValueError, match="rng"):
        task.sample(-1, 2)
    with pytest.raises(TypeError, match="rng"):
        task.sample("a", 2)
    with pytest.raises(ValueError, match="seed"):
        task.stream(-3, 2)
    with pytest.raises(ValueError, match="split"):
        task.stream(0, 2, split="validation")
    with pytest.raises(ValueError, match="batch_size"):
        task.epoch(0)


def test_registry(shd_files):
    assert set(TASKS) == {"evidence", "dms", "digits", "shd", "region_rates"}
    assert isinstance(get_task("evidence", **SHORT_EVIDENCE), EvidenceAccumulation)
    assert isinstance(get_task("dms", delay_ms=10), DelayedMatchToSample)
    assert isinstance(get_task("digits", n_steps=5), SpikingDigits)
    assert isinstance(get_task("shd", train_path=shd_files[0], n_channels=20), Task)
    allowed = r"'digits', 'dms', 'evidence', 'region_rates', 'shd'.*'mnist'"
    with pytest.raises(ValueError, match=allowed):
        get_task("mnist")


# ---------------------------------------------------------------------------------------------
# evidence accumulation


def test_evidence_defaults_are_canonical():
    task = EvidenceAccumulation()
    assert (task.n_in, task.n_out, task.dt, task.n_steps) == (40, 2, 1.0, 7 * 150 + 1000 + 150)
    assert task.recall_window == (2050, 2200)
    assert task.cue_windows[1] == (150, 250)
    assert task.n_examples() == 512


def test_evidence_schedule_and_start():
    task = EvidenceAccumulation(**SHORT_EVIDENCE, start_ms=15)
    assert task.cue_windows == ((15, 35), (45, 65), (75, 95))
    assert task.recall_window == (155, 185) and task.n_steps == 185
    half = EvidenceAccumulation(**SHORT_EVIDENCE, dt=0.5)
    assert half.n_steps == 2 * 170 and half.cue_windows[0] == (0, 40)


def test_evidence_label_is_majority_of_cues():
    task = EvidenceAccumulation(**SHORT_EVIDENCE, cue_rate_hz=1000.0)  # p = 1: cues are exact
    batch, info = task.sample_with_info(0, 200)
    cues = info["cues"]
    assert cues.shape == (200, 3) and set(np.unique(cues)) == {0, 1}
    g = task.channel_groups
    left, right = list(g["left"]), list(g["right"])
    for k, (s0, s1) in enumerate(task.cue_windows):
        # which side fired during cue k, read off the spikes
        fired_right = batch.x[s0:s1][:, :, right].sum(axis=(0, 2))
        fired_left = batch.x[s0:s1][:, :, left].sum(axis=(0, 2))
        assert np.array_equal(fired_right > 0, cues[:, k] == 1)
        assert np.array_equal(fired_left > 0, cues[:, k] == 0)
    n_right = cues.sum(axis=1)
    assert np.array_equal(batch.label, (n_right > 3 - n_right).astype(np.int32))
    assert 0.3 < batch.label.mean() < 0.7


@pytest.mark.parametrize("minority", [0.3, 0.5, 0.0])
def test_evidence_cues_favour_one_side_per_trial(minority):
    task = EvidenceAccumulation(
        n_cues=7, cue_ms=5, gap_ms=0, delay_ms=0, recall_ms=5, minority_prob=minority
    )
    _, info = task.sample_with_info(3, 4000)
    cues = info["cues"]
    n_right = cues.sum(axis=1)
    # Each trial favours one side; a cue lands on the other side with `minority` probability.
    on_majority = np.where(n_right > 3, n_right, 7 - n_right) / 7
    if minority == 0.0:
        assert np.all(on_majority == 1.0)
    else:
        # E[fraction of cues on the more frequent side] for independent cues, by enumeration
        from math import comb

        p = 1 - minority
        pmf = [comb(7, k) * p**k * (1 - p) ** (7 - k) for k in range(8)]
        want = sum(pmf[k] * max(k, 7 - k) / 7 for k in range(8))
        assert abs(on_majority.mean() - want) < 0.01
    assert 0.45 < cues.mean() < 0.55  # no side preferred overall


def test_evidence_firing_rates():
    task = EvidenceAccumulation(**SHORT_EVIDENCE)
    batch, info = task.sample_with_info(1, 400)
    x, cues, g = batch.x, info["cues"], task.channel_groups
    dt_s = task.dt / 1000.0
    in_cue = np.zeros((task.n_steps,), bool)
    for s0, s1 in task.cue_windows:
        in_cue[s0:s1] = True

    def rate(spikes):
        return spikes.mean() / dt_s

    # active cue channels: the cue's side, during its window
    active = []
    for k, (s0, s1) in enumerate(task.cue_windows):
        for side, chans in ((0, g["left"]), (1, g["right"])):
            sel = cues[:, k] == side
            active.append(x[s0:s1][:, sel][:, :, list(chans)].ravel())
    assert rate(np.concatenate(active)) == pytest.approx(40.0, rel=0.1)
    # cue channels are silent outside cue windows
    assert x[~in_cue][:, :, : 2 * task.channels_per_group].sum() == 0
    # noise channels: 10 Hz over the whole trial
    assert rate(x[:, :, list(g["noise"])]) == pytest.approx(10.0, rel=0.1)
    # recall channels: 40 Hz in the recall window, silent elsewhere
    r0, r1 = task.recall_window
    assert rate(x[r0:r1][:, :, list(g["recall"])]) == pytest.approx(40.0, rel=0.1)
    assert x[:r0][:, :, list(g["recall"])].sum() == 0


def test_evidence_mask_is_recall_window():
    task = EvidenceAccumulation(**SHORT_EVIDENCE)
    mask = task.sample(0, 3).mask
    r0, r1 = task.recall_window
    expected = np.zeros_like(mask)
    expected[r0:r1] = 1.0
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"n_cues": 4}, ValueError, "n_cues.*odd.*got 4"),
        ({"n_cues": 0}, ValueError, "n_cues"),
        ({"n_cues": 3.0}, TypeError, "n_cues"),
        ({"delay_ms": -5.0}, ValueError, r"`delay_ms` must be >= 0; got -5.0\."),
        ({"cue_ms": 0}, ValueError, "cue_ms"),
        ({"recall_ms": 0}, ValueError, "recall_ms"),
        ({"gap_ms": 2.5}, ValueError, "gap_ms.*multiple of `dt`"),
        ({"dt": 0}, ValueError, "dt"),
        ({"cue_rate_hz": 2000.0}, ValueError, "cue_rate_hz.*<= 1"),
        ({"noise_rate_hz": -1}, ValueError, "noise_rate_hz"),
        ({"start_ms": float("nan")}, ValueError, "start_ms"),
        ({"channels_per_group": 0}, ValueError, "channels_per_group"),
        ({"n_test": 0}, ValueError, "n_test"),
        ({"delay_ms": "long"}, TypeError, "delay_ms"),
    ],
)
def test_evidence_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        EvidenceAccumulation(**{**SHORT_EVIDENCE, **kwargs})


# ---------------------------------------------------------------------------------------------
# delayed match-to-sample


def test_dms_defaults():
    task = DelayedMatchToSample()
    assert (task.n_in, task.n_out, task.n_steps) == (32, 2, 100 + 300 + 1000 + 300)
    assert task.sample_window == (100, 400) and task.test_window == (1400, 1700)
    long = DelayedMatchToSample(delay_ms=3000)
    assert long.n_steps == 3700


def test_dms_labels_and_mask():
    task = DelayedMatchToSample(**SHORT_DMS)
    batch, info = task.sample_with_info(0, 2000)
    sample, test = info["sample_direction"], info["test_direction"]
    match = sample == test
    assert np.array_equal(batch.label, match.astype(np.int32))
    assert 0.45 < match.mean() < 0.55
    assert set(np.unique(sample)) == set(range(8)) and set(np.unique(test)) == set(range(8))
    t0, t1 = task.test_window
    expected = np.zeros((task.n_steps, 2000), np.float32)
    expected[t0:t1] = 1.0
    assert np.array_equal(batch.mask, expected)
    always = DelayedMatchToSample(**SHORT_DMS, match_prob=1.0).sample(0, 50)
    assert always.label.all()


def test_dms_tuning_peaks_at_sample_direction():
    task = DelayedMatchToSample(**SHORT_DMS)
    batch, info = task.sample_with_info(2, 800)
    s0, s1 = task.sample_window
    rates = batch.x[s0:s1].mean(axis=0) / (task.dt / 1000.0)  # (B, n_channels) in Hz
    per_channel = task.n_channels // task.n_directions
    for d in range(task.n_directions):
        mean_rate = rates[info["sample_direction"] == d].mean(axis=0)
        peak = int(mean_rate.argmax())
        dist = min(abs(peak - d * per_channel), task.n_channels - abs(peak - d * per_channel))
        assert dist <= 1, (d, peak)
        assert mean_rate.max() > 25.0 and mean_rate.min() < 10.0
    # the delay is baseline only (2 Hz)
    delay = batch.x[s1 : task.test_window[0]]
    assert delay.mean() / (task.dt / 1000.0) == pytest.approx(2.0, rel=0.15)
    # exact tuning curve
    curve = task.tuning()
    assert curve.shape == (8, 32) and curve.max() == pytest.approx(42.0)
    assert curve.min() == pytest.approx(2.0 + 40.0 * np.exp(-4.0))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"delay_ms": -1}, ValueError, "delay_ms.*>= 0"),
        ({"n_directions": 1}, ValueError, "n_directions"),
        ({"n_channels": 0}, ValueError, "n_channels"),
        ({"kappa_tuning": -1.0}, ValueError, "kappa_tuning"),
        ({"match_prob": 1.5}, ValueError, "match_prob.*<= 1"),
        ({"max_rate_hz": 5000.0}, ValueError, "max_rate_hz"),
        ({"sample_ms": 0}, ValueError, "sample_ms"),
        ({"test_ms": 0.5}, ValueError, "test_ms"),
        ({"baseline_hz": None}, TypeError, "baseline_hz"),
    ],
)
def test_dms_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        DelayedMatchToSample(**{**SHORT_DMS, **kwargs})


# ---------------------------------------------------------------------------------------------
# spiking digits


def test_digits_split_fixed_and_balanced():
    pytest.importorskip("sklearn")
    a, b = SpikingDigits(), SpikingDigits(encoding="latency", n_steps=7)
    train, test = a.indices("train"), a.indices("test")
    assert np.array_equal(test, b.indices("test")) and np.array_equal(train, b.indices("train"))
    assert np.intersect1d(train, test).size == 0
    assert train.size + test.size == 1797
    assert test.size == pytest.approx(0.2 * 1797, abs=10)
    labels = a._labels
    for split in (train, test):
        counts = np.bincount(labels[split], minlength=10)
        assert counts.min() >= 0.9 * counts.mean() and counts.max() <= 1.1 * counts.mean()
    # samples of a split come from that split, whatever the seed
    for seed in range(3):
        _, info = a.sample_with_info(seed, 50, split="test")
        assert np.isin(info["index"], test).all()
        assert np.unique(info["index"]).size == 50  # distinct within a batch
        _, info = a.sample_with_info(seed, 50, split="train")
        assert np.isin(info["index"], train).all()


def test_digits_epoch_covers_test_split_once():
    pytest.importorskip("sklearn")
    task = SpikingDigits(encoding="latency", n_steps=10)
    batches = list(task.epoch(100))
    test = task.indices("test")
    labels = np.concatenate([b.label for b in batches])
    assert labels.size == test.size
    assert np.array_equal(labels, task._labels[test])
    x = np.concatenate([b.x for b in batches], axis=1)
    assert np.array_equal(x, task.encode(task._images[test]))  # every example once, in order
    # a batch larger than the split
    big = list(SpikingDigits(n_steps=5).epoch(10_000, split="test"))
    assert len(big) == 1 and big[0].label.size == test.size


def test_digits_latency_encoding():
    pytest.importorskip("sklearn")
    task = SpikingDigits(encoding="latency", n_steps=30, threshold=0.1)
    batch, info = task.sample_with_info(0, 64)
    counts = batch.x.sum(axis=0)  # (B, 64)
    assert counts.max() <= 1
    images = task._images[info["index"]]
    assert np.array_equal(counts == 1, images > 0.1)
    b, c = np.argwhere(counts == 1)[0]
    step = int(np.flatnonzero(batch.x[:, b, c])[0])
    assert step == round((1.0 - float(images[b, c])) * 29)


def test_digits_rate_encoding_tracks_intensity():
    pytest.importorskip("sklearn")
    task = SpikingDigits(n_steps=50, max_rate_hz=200.0)
    batch, info = task.sample_with_info(0, 300)
    images = task._images[info["index"]]
    measured = batch.x.mean(axis=0)  # per-step spike probability, (B, 64)
    expected = images * 0.2
    assert measured.mean() == pytest.approx(expected.mean(), rel=0.05)
    assert measured[images == 0].sum() == 0
    bright, dim = images > 0.9, (images > 0) & (images < 0.3)
    assert measured[bright].mean() == pytest.approx(0.2 * images[bright].mean(), rel=0.05)
    assert measured[dim].mean() < 0.5 * measured[bright].mean()
    assert np.corrcoef(measured.ravel(), expected.ravel())[0, 1] > 0.8


def test_digits_readout_mask_and_fresh_spikes():
    pytest.importorskip("sklearn")
    task = SpikingDigits(n_steps=20, readout_steps=4)
    batch = task.sample(0, 3)
    assert np.array_equal(batch.mask[:16], np.zeros((16, 3))) and batch.mask[16:].all()
    assert SpikingDigits(n_steps=20).sample(0, 3).mask.all()
    # same examples with a fresh Generator state give fresh spikes under rate coding
    rng = np.random.default_rng(0)
    x1 = task.encode(task._images[:2], rng)
    x2 = task.encode(task._images[:2], rng)
    assert not np.array_equal(x1, x2)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"encoding": "phase"}, ValueError, "encoding.*'rate', 'latency'.*'phase'"),
        ({"n_steps": 0}, ValueError, "n_steps"),
        ({"test_fraction": 1.0}, ValueError, "test_fraction"),
        ({"test_fraction": 0.0}, ValueError, "test_fraction"),
        ({"readout_steps": 60}, ValueError, "readout_steps"),
        ({"max_rate_hz": 2000.0}, ValueError, "max_rate_hz"),
        ({"threshold": 2.0}, ValueError, "threshold"),
    ],
)
def test_digits_bad_arguments(kwargs, error, pattern):
    pytest.importorskip("sklearn")
    with pytest.raises(error, match=pattern):
        SpikingDigits(**kwargs)


def test_digits_encode_checks_shape():
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="images"):
        SpikingDigits().encode(np.zeros((2, 10)))


# ---------------------------------------------------------------------------------------------
# Spiking Heidelberg Digits


def test_shd_binning_by_hand(tmp_path):
    pytest.importorskip("h5py")
    times = [
        np.array([0.0, 0.05, 0.09, 0.15, 0.55, 0.999, 1.0, 1.3]),
        np.array([0.31]),
        np.array([]),
    ]
    units = [np.array([0, 3, 3, 7, 19, 5, 2, 1]), np.array([10]), np.array([], int)]
    path = write_shd_file(tmp_path / "hand.h5", times, units, [2, 0, 1])
    task = SpikingHeidelbergDigits(
        path, n_steps=10, max_time_s=1.0, n_channels=20, binary=False, n_classes=None
    )
    assert (task.n_in, task.n_out, task.dt, task.n_steps) == (20, 3, 100.0, 10)
    batch = next(task.epoch(3, split="train"))
    expected = np.zeros((10, 3, 20), np.float32)
    for step, ch in [(0, 0), (0, 3), (0, 3), (1, 7), (5, 19), (9, 5)]:  # 1.0 and 1.3 dropped
        expected[step, 0, ch] += 1
    expected[3, 1, 10] = 1
    assert np.array_equal(batch.x, expected)
    assert np.array_equal(batch.label, [2, 0, 1])
    assert batch.mask.all()
    # binary clips the count of 2 to 1
    binary = SpikingHeidelbergDigits(path, n_steps=10, n_channels=20)
    assert np.array_equal(next(binary.epoch(3, split="train")).x, np.minimum(expected, 1))
    assert binary.n_out == 20
    # downsampling pools channels c -> c // 4
    pooled = SpikingHeidelbergDigits(path, n_steps=10, n_channels=20, downsample=4, binary=False)
    assert pooled.n_in == 5
    x = next(pooled.epoch(3, split="train")).x
    by_hand = expected.reshape(10, 3, 5, 4).sum(axis=3)
    assert np.array_equal(x, by_hand)
    # uneven downsampling drops the leftover channels (19 -> input 6 of 6 is out)
    uneven = SpikingHeidelbergDigits(path, n_steps=10, n_channels=20, downsample=3, binary=False)
    assert uneven.n_in == 6
    x = next(uneven.epoch(3, split="train")).x
    assert x.sum() == expected.sum() - 1
    # readout_steps
    ro = SpikingHeidelbergDigits(path, n_steps=10, n_channels=20, readout_steps=3)
    assert ro.sample(0, 2).mask.sum(axis=0).tolist() == [3.0, 3.0]


def test_shd_sample_and_splits(shd_files):
    train, test = shd_files
    task = SpikingHeidelbergDigits(train, test, n_steps=25, n_channels=20)
    assert task.n_examples("train") == 6 and task.n_examples("test") == 4
    batch, info = task.sample_with_info(0, 4, split="test")
    assert np.unique(info["index"]).size == 4
    epoch_x = next(task.epoch(4, split="test")).x
    assert np.array_equal(batch.x, epoch_x[:, info["index"]])
    big = task.sample(0, 10, split="test")  # more than the split: with replacement
    assert big.x.shape == (25, 10, 20)
    only_train = SpikingHeidelbergDigits(train, n_channels=20)
    with pytest.raises(ValueError, match="test_path"):
        only_train.sample(0, 2, split="test")
    with pytest.raises(ValueError, match="test_path"):
        list(only_train.epoch(2))


def test_shd_errors(tmp_path, shd_files):
    train, _ = shd_files
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        SpikingHeidelbergDigits(missing)
    with pytest.raises(FileNotFoundError, match="test_path"):
        SpikingHeidelbergDigits(train, missing, n_channels=20)
    h5py = pytest.importorskip("h5py")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("labels", data=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="spikes/times"):
        SpikingHeidelbergDigits(bad)
    with pytest.raises(ValueError, match="n_channels"):
        SpikingHeidelbergDigits(train, n_channels=10)  # ids up to 19 in the file
    with pytest.raises(ValueError, match="n_classes"):
        SpikingHeidelbergDigits(train, n_channels=20, n_classes=2)
    with pytest.raises(ValueError, match="downsample"):
        SpikingHeidelbergDigits(train, n_channels=20, downsample=0)
    with pytest.raises(ValueError, match="max_time_s"):
        SpikingHeidelbergDigits(train, n_channels=20, max_time_s=0)
    with pytest.raises(TypeError, match="train_path"):
        SpikingHeidelbergDigits(3)
    with pytest.raises(ValueError, match=r"times.*units.*labels"):
        write_shd_file(tmp_path / "x.h5", [[0.1]], [[1], [2]], [0])
    with pytest.raises(ValueError, match=r"times\[0\].*units\[0\]"):
        write_shd_file(tmp_path / "x.h5", [[0.1, 0.2]], [[1]], [0])
