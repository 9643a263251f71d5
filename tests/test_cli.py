"""The command line, ``python -m traxon train``: argument checks, help, the progress bar,
the best checkpoint, Ctrl-C and a full disk. The runs are the quick digits task with a
batch of 2 (seconds each)."""

from __future__ import annotations

import argparse
import errno
import json
import re
import signal
import subprocess
import sys
import time
from typing import Any

import jax
import numpy as np
import optax
import pytest

from traxon.cli import main
from traxon.learn.learner import OnlineLearner
from traxon.recipes import recipe
from traxon.trace import ALGORITHMS

TINY = ["train", "--task", "digits", "--quick", "--batch-size", "2", "--eval-every", "2"]


def _summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _train(out, iterations: int, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, dict]:
    """A quick run of ``iterations`` sequences into ``out``, without the progress bar: the
    exit code, what it printed and its summary."""
    code = main([*TINY, "--iterations", str(iterations), "--no-progress", "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured, _summary(captured.out)


@pytest.mark.parametrize(
    "bad",
    [
        ["--batch-size", "0"],
        ["--batch-size", "-4"],
        ["--iterations", "0"],
        ["--iterations", "-3"],
        ["--lr", "0"],
        ["--lr", "-0.1"],
        ["--lr", "nan"],
        ["--time-budget", "-5"],
        ["--time-budget", "0"],
        ["--time-budget", "nan"],
        ["--eval-every", "0"],
        ["--target-accuracy", "1.5"],
        ["--seed", "-1"],
        ["--algorithm", "sgd"],
    ],
)
def test_bad_values_are_refused_before_any_work(bad, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default output folder would be runs/... here
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--no-progress", "--out", str(out), *bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {bad[0]}" in err and bad[1] in err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_resume_of_a_missing_checkpoint_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--resume", str(tmp_path / "nothing")])
    assert exc.value.code == 2
    assert "--resume" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("in the way")
    out = tmp_path / "file" / "run"
    with pytest.raises(SystemExit, match=r"cannot create the output folder .*file"):
        main([*TINY, "--no-progress", "--out", str(out)])


def test_help_describes_every_option_with_defaults_and_lists_every_algorithm(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ALGORITHMS:
        assert name in text
    assert "(default: 300.0)" in text and "(default: evidence)" in text
    assert "(default: 25)" in text and "(default: 0)" in text
    from traxon.cli import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = commands.choices["train"]
    for action in train._actions:
        assert action.help, f"{action.option_strings} has no help text"


def test_evidence_recipe_clips_gradients_and_decays_the_learning_rate():
    r = recipe("evidence", quick=True)
    assert r.clip_norm is not None and r.clip_norm > 0
    assert r.lr_decay_steps is not None
    opt = r.optimizer(1.0)
    params = np.zeros(3, np.float32)
    state = opt.init(params)
    grad = np.ones(3, np.float32)
    step = jax.jit(opt.update)
    first, _ = step(grad, state, params)
    for _ in range(r.lr_decay_steps):
        update, state = step(grad, state, params)
    # Adam under a constant gradient steps by the learning rate itself.
    np.testing.assert_allclose(np.asarray(first), -1.0, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(update), -0.1, rtol=1e-2)
    assert isinstance(recipe("digits", quick=True).optimizer(), optax.GradientTransformation)


def test_run_shows_the_time_budget_and_keeps_the_best_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([*TINY, "--iterations", "4", "--time-budget", "600", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    # The bar runs over the seconds of the budget, with the batches in its postfix.
    assert "/600 s of the time budget" in captured.err
    assert "seq=4/4" in captured.err
    summary = _summary(captured.out)
    assert summary["sequences"] == 4 and summary["stopped_by"] == "iterations"
    assert summary["interrupted"] is False and summary["errors"] == []
    history = json.loads((out / "history.json").read_text())
    tests = dict(history["test"])
    assert set(tests) == {2, 4}
    assert summary["best_test_accuracy"] == max(tests.values())
    assert tests[summary["best_at"]] == summary["best_test_accuracy"]
    assert summary["best_checkpoint"] == str(out / "best.npz")
    assert summary["checkpoint"] == str(out / "checkpoint.npz")
    assert (out / "best.npz").is_file() and (out / "checkpoint.npz").is_file()
    assert json.loads((out / "summary.json").read_text()) == summary


def test_full_disk_still_prints_the_summary(tmp_path, capsys, monkeypatch):
    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(OnlineLearner, "save", full)
    out = tmp_path / "run"
    code, captured, summary = _train(out, 2, capsys)
    assert code == 1
    assert summary["sequences"] == 2 and summary["checkpoint"] is None
    assert any("checkpoint.npz" in e and "No space" in e for e in summary["errors"])
    assert "could not write the checkpoint" in captured.err and "No space" in captured.err
    assert (out / "history.json").is_file()


def test_a_nonfinite_update_stops_training_and_keeps_what_was_done(tmp_path, capsys, monkeypatch):
    fit = OnlineLearner.fit
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("the loss or the gradient became NaN/Inf")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(OnlineLearner, "fit", failing)
    out = tmp_path / "run"
    code, captured, summary = _train(out, 3, capsys)
    assert code == 1
    assert summary["stopped_by"] == "nonfinite" and summary["sequences"] == 1
    assert any("NaN/Inf" in e for e in summary["errors"]) and "NaN/Inf" in captured.err
    assert summary["checkpoint"] == str(out / "checkpoint.npz")
    assert (out / "checkpoint.npz").is_file()


@pytest.mark.slow
def test_ctrl_c_writes_what_was_done_and_resume_continues(tmp_path, subprocess_env, capsys):
    out = tmp_path / "run"
    err_path = tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "traxon", *TINY, "--iterations", "1000"]
    cmd += ["--time-budget", "inf", "--out", str(out)]
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=subprocess_env)
        deadline = time.monotonic() + 300
        while not re.search(r"\b[1-9]\d*/1000\b", err_path.read_text()):
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "no progress within 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=300)
    err_text = err_path.read_text()
    assert proc.returncode == 130, err_text
    assert "Traceback" not in err_text
    assert f"--resume {out}" in err_text
    summary = _summary(stdout.decode())
    assert summary["interrupted"] is True and summary["stopped_by"] == "interrupt"
    done = summary["sequences"]
    assert done >= 1 and summary["steps"] > 0
    for name in ("checkpoint.npz", "history.json", "summary.json", "raster.png"):
        assert (out / name).is_file(), name
    assert len(json.loads((out / "history.json").read_text())["train"]) == done

    args = [*TINY, "--iterations", str(done + 1), "--time-budget", "inf", "--no-progress"]
    assert main([*args, "--resume", str(out)]) == 0
    resumed = _summary(capsys.readouterr().out)
    assert resumed["resumed_from"] == str(out / "checkpoint.npz")
    assert resumed["out"] == str(out) and resumed["sequences"] == done + 1
    assert resumed["steps"] > summary["steps"]
    assert len(json.loads((out / "history.json").read_text())["train"]) == done + 1

    # The same as a run that was never stopped: the learner and the stream pick up where
    # they were.
    fresh = tmp_path / "fresh"
    assert main([*args, "--out", str(fresh)]) == 0
    capsys.readouterr()
    with np.load(out / "checkpoint.npz") as a, np.load(fresh / "checkpoint.npz") as b:
        leaves = [k for k in a.files if k.startswith("leaf")]
        assert leaves and sorted(leaves) == sorted(k for k in b.files if k.startswith("leaf"))
        for k in leaves:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)

    # A complete run is not trained further without larger limits, and says so.
    assert main([*args, "--resume", str(out / "checkpoint.npz")]) == 0
    captured = capsys.readouterr()
    again = _summary(captured.out)
    assert again["sequences"] == done + 1 and again["steps"] == resumed["steps"]
    assert again["stopped_by"] == "already complete" and "is complete" in captured.err


def test_help_lists_the_options_of_every_algorithm(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--algorithm-option KEY=VALUE" in text
    assert "es_d_rtrl: ES-D-RTRL" in text and "decay='auto', exact=()" in text
    assert "uoro: UORO" in text and "options: seed=0" in text
    assert "rtrl: Exact real-time recurrent learning" in text


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("dekay=0.9", r"es_d_rtrl has no option 'dekay'; its options are: decay, exact"),
        ("decay=7", r"es_d_rtrl refused \{'decay': 7\}: `decay` must lie in \[0, 1\]"),
        ('exact=["nope"]', r"`exact` names weights \['nope'\] that are not trainable"),
        ("decay", r"--algorithm-option must look like KEY=VALUE; got 'decay'"),
    ],
)
def test_bad_algorithm_options_are_refused_before_any_work(option, message, tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--algorithm", "es_d_rtrl", "--algorithm-option", option, "--out", str(out)]
    with pytest.raises(SystemExit, match=message):
        main([*args, "--no-progress"])
    assert not out.exists()


def test_algorithm_options_reach_the_learner_and_a_resume_must_repeat_them(
    tmp_path, capsys, monkeypatch
):
    import traxon.learn

    used = []

    def recording(net, algorithm, *args, **kwargs):
        used.append(algorithm)
        return traxon.learn.learner.online_learner(net, algorithm, *args, **kwargs)

    monkeypatch.setattr(traxon.learn, "online_learner", recording)
    out = tmp_path / "run"
    common = [*TINY, "--no-progress", "--algorithm", "es_d_rtrl", "--iterations", "1"]
    assert main([*common, "--algorithm-option", "decay=0.9", "--out", str(out)]) == 0
    summary = _summary(capsys.readouterr().out)
    assert used[-1].decay == 0.9 and summary["algorithm_options"] == {"decay": 0.9}
    assert json.loads((out / "history.json").read_text())["algorithm_options"] == {"decay": 0.9}
    with pytest.raises(SystemExit, match=r"trained with --algorithm-option decay=0.9; this call"):
        main([*common, "--algorithm-option", "decay=0.8", "--resume", str(out)])
    with pytest.raises(SystemExit, match=r"this call gives \(none\)"):
        main([*common, "--resume", str(out)])
