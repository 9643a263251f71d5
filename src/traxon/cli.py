"""The command line: ``python -m traxon train --task evidence --algorithm es_d_rtrl``.

Trains a built-in task online with a progress bar, evaluates on the task's held-out set,
writes a learning-curve and a spike-raster PNG (and the last and the best checkpoint, the
history and the summary) to ``--out``, and prints a JSON summary as its last line.

Exit status: 0 when the run finished and everything was written; 130 when it was stopped
with Ctrl-C (what was done is written first, and ``--resume`` continues it); 1 when a file
could not be written (the summary is printed all the same); 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["main"]

_N = TypeVar("_N", int, float)

_TASKS = ["evidence", "dms", "digits", "shd"]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# ------------------------------------------------------------------------------------
# Argument types: a bad value is an argparse error (exit 2) before anything is done.


def _number_type(
    kind: Callable[[str], _N], accept: Callable[[_N], bool], what: str, in_range: str = ""
) -> Callable[[str], _N]:
    """An argparse type: ``kind(text)`` if ``accept`` takes it; otherwise an error saying
    the value must be ``what`` (or ``in_range`` once it parsed but was refused)."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}; got {text!r}") from None
        if not accept(value):  # a comparison with nan is False: nan is refused
            raise argparse.ArgumentTypeError(f"must be {in_range or what}; got {text!r}")
        return value

    return parse


_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number_type(
    float, lambda v: v > 0 and math.isfinite(v), "a positive number", "a positive, finite number"
)
_seconds = _number_type(
    float,
    lambda v: v > 0,
    "a number of seconds",
    "a positive number of seconds (or inf for no limit)",
)
_accuracy = _number_type(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
_seed = _number_type(int, lambda v: v >= 0, "a non-negative integer")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` for options whose default is a value, not for ``None``
    (those say in their help what they fall back to) nor for flags."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # Text laid out in lines (the list of learning rules) keeps its lines.
        if "\n" in text:
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _algorithms() -> list[str]:
    from traxon.trace import ALGORITHMS

    return sorted(ALGORITHMS)


def _algorithm_options(name: str) -> dict[str, inspect.Parameter]:
    """The constructor options of a registered learning rule, by name."""
    from traxon.trace import ALGORITHMS

    return dict(inspect.signature(ALGORITHMS[name]).parameters)


def _algorithm_help() -> str:
    """One entry per learning rule: its summary and its options with their defaults."""
    from traxon.trace import ALGORITHMS

    lines = ["learning rules (--algorithm) and their options (--algorithm-option KEY=VALUE):"]
    for name in _algorithms():
        module = sys.modules[ALGORITHMS[name].__module__]
        summary = (module.__doc__ or "").strip().splitlines()[0].rstrip(".")
        lines.append(f"  {name}: {summary}")
        options = [
            f"{k}={p.default!r}" if p.default is not inspect.Parameter.empty else k
            for k, p in _algorithm_options(name).items()
        ]
        lines.append("      options: " + (", ".join(options) if options else "none"))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="traxon", description=__doc__.splitlines()[0], formatter_class=_HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train a built-in task online",
        description="Train a built-in task online with its recipe (traxon.recipes); every "
        "setting left out is the recipe's. Ctrl-C stops after the current sequence and "
        "writes what was done (exit 130); --resume continues it.",
        formatter_class=_HelpFormatter,
        epilog=_algorithm_help(),
    )
    algorithms = _algorithms()
    train.add_argument("--task", default="evidence", choices=_TASKS, help="the task to learn")
    train.add_argument(
        "--algorithm",
        default=None,
        choices=algorithms,
        metavar="ALGORITHM",
        help="the learning rule, one of: " + ", ".join(algorithms) + " (default: the task's "
        "recipe: d_rtrl for evidence and dms, es_d_rtrl for digits and shd; each is "
        "described below)",
    )
    train.add_argument(
        "--algorithm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the learning rule, e.g. --algorithm-option decay=0.9 for es_d_rtrl "
        "(repeatable; VALUE is read as JSON, else as text; the options of each rule are "
        "listed below)",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="sequences per batch (default: the recipe's, 32)",
    )
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        metavar="RATE",
        help="peak Adam learning rate (default: the recipe's)",
    )
    train.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        metavar="N",
        help="batches of sequences to train on in all, counting those of a resumed run "
        "(default: the recipe's)",
    )
    train.add_argument(
        "--time-budget",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="stop training after this many seconds, counting those of a resumed run "
        "(inf: no limit)",
    )
    train.add_argument(
        "--target-accuracy",
        type=_accuracy,
        default=None,
        metavar="ACCURACY",
        help="stop as soon as the test accuracy reaches this value",
    )
    train.add_argument(
        "--eval-every",
        type=_positive_int,
        default=25,
        metavar="N",
        help="batches between evaluations on the test set (each one that improves on the "
        "best so far is saved as best.npz)",
    )
    train.add_argument(
        "--seed",
        type=_seed,
        default=0,
        metavar="N",
        help="seed of the weights and of the training stream",
    )
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: runs/TASK-ALGORITHM-TIME, or the folder of --resume)",
    )
    train.add_argument(
        "--quick", action="store_true", help="a short task version (a smoke test of seconds)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="PATH",
        help="continue a run: its output folder or its checkpoint.npz (the learner, the "
        "history beside it, and the training stream where it stopped)",
    )
    train.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task constructor option, e.g. --task-option delay_ms=500 (repeatable)",
    )
    train.add_argument(
        "--data", type=Path, default=None, metavar="PATH", help="SHD: the training HDF5 file"
    )
    train.add_argument(
        "--test-data", type=Path, default=None, metavar="PATH", help="SHD: the test HDF5 file"
    )
    return parser


def _task_options(args: argparse.Namespace) -> dict[str, Any]:
    options = _key_values(args.task_option, "--task-option")
    if args.task == "shd":
        if args.data is None:
            raise SystemExit("--task shd needs --data PATH (and --test-data PATH) to SHD files.")
        options.setdefault("train_path", str(args.data))
        if args.test_data is not None:
            options.setdefault("test_path", str(args.test_data))
    return options


def _key_values(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict (``VALUE`` read as JSON, else kept as text)."""
    options: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"{flag} must look like KEY=VALUE; got {item!r}")
        key, value = item.split("=", 1)
        options[key] = _parse_value(value)
    return options


def _algorithm(name: str, items: list[str]) -> Any:
    """The learning rule ``name`` with the ``--algorithm-option`` values, checked before any
    work: an unknown option or a value the rule refuses is a usage error naming them."""
    from traxon.trace import get_algorithm

    options = _key_values(items, "--algorithm-option")
    known = _algorithm_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        accepted = ", ".join(known) if known else "none"
        raise SystemExit(
            f"--algorithm-option: {name} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {accepted}."
        )
    try:
        return get_algorithm(name, **options)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--algorithm-option: {name} refused {options}: {err}") from None


def _resume_paths(resume: Path) -> tuple[Path, Path]:
    """The checkpoint and the history of ``--resume`` (a folder or a checkpoint file)."""
    checkpoint = resume / "checkpoint.npz" if resume.is_dir() else resume
    return checkpoint, checkpoint.parent / "history.json"


# ------------------------------------------------------------------------------------
# Ctrl-C: the first one stops after the current sequence, a second one at once; either
# way what was done is written.


class _Interrupt:
    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\ntraxon: stopping after this sequence (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


class _Progress:
    """A tqdm bar over what limits the run: the seconds of the time budget (the count of
    sequences in the postfix), or the sequences when there is no budget."""

    def __init__(self, desc: str, budget: float, done: int, total: int, spent: float) -> None:
        from tqdm.auto import tqdm

        self.budget = math.isfinite(budget)
        self.total = total
        if self.budget:
            self.bar = tqdm(
                total=round(budget, 1),
                initial=round(min(spent, budget), 1),
                unit="s",
                file=sys.stderr,
                desc=desc,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of the "
                "time budget{postfix}",
            )
        else:
            self.bar = tqdm(total=total, initial=done, unit="seq", file=sys.stderr, desc=desc)

    def update(self, done: int, spent: float, post: dict[str, str]) -> None:
        if self.budget:
            assert self.bar.total is not None
            self.bar.update(round(min(spent, self.bar.total) - self.bar.n, 1))
            post = {"seq": f"{done}/{self.total}", **post}
        else:
            self.bar.update(done - self.bar.n)
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        self.bar.close()


def _warn(message: str) -> None:
    print(f"traxon: {message}", file=sys.stderr, flush=True)


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the ``train`` command; returns the summary it prints (``interrupted`` and
    ``errors`` say whether it was stopped and which files could not be written)."""
    import itertools

    import jax
    import numpy as np

    from traxon.learn import online_learner
    from traxon.recipes import recipe

    start = time.perf_counter()
    r = recipe(args.task, args.algorithm, quick=args.quick, **_task_options(args))
    batch = r.batch_size if args.batch_size is None else args.batch_size
    lr = r.learning_rate if args.lr is None else args.lr
    iterations = r.iterations if args.iterations is None else args.iterations
    algorithm = _algorithm(r.algorithm, args.algorithm_option)
    algorithm_options = _key_values(args.algorithm_option, "--algorithm-option")

    history: list[dict[str, float]] = []
    evaluations: list[tuple[int, float]] = []
    spent = 0.0  # training seconds of earlier sessions of a resumed run
    best, best_at = -math.inf, None
    resume_checkpoint = None
    if args.resume is not None:
        resume_checkpoint, resume_history = _resume_paths(args.resume)
        if resume_history.exists():
            saved = json.loads(resume_history.read_text())
            history = list(saved.get("train", []))
            evaluations = [(int(i), float(a)) for i, a in saved.get("test", [])]
            spent = float(saved.get("train_s", 0.0))
            before = saved.get("algorithm_options", {})
            if history and before != algorithm_options:
                raise SystemExit(
                    f"--resume: the run in {resume_checkpoint.parent} trained with "
                    f"--algorithm-option {_options_text(before)}; this call gives "
                    f"{_options_text(algorithm_options)}. Resume with the same options."
                )
            if saved.get("best_at") is not None:
                best, best_at = float(saved["best_test_accuracy"]), int(saved["best_at"])
    if args.out is not None:
        out = args.out
    elif resume_checkpoint is not None:
        out = resume_checkpoint.parent
    else:
        out = Path("runs") / f"{args.task}-{r.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        learner = online_learner(
            r.network,
            algorithm,
            r.optimizer(lr),
            "cross_entropy",
            update_every=r.update_every,
            sequence_length=r.task.n_steps,
            rate_target=r.rate_target,
            rate_reg=r.rate_reg,
            clip_norm=r.clip_norm,
            seed=args.seed,
        )
    except (TypeError, ValueError) as err:
        if not algorithm_options:
            raise
        # an option the rule accepts alone but not on this network (e.g. exact=[a weight
        # it does not have]): a usage error, before any folder is made
        raise SystemExit(f"--algorithm-option: {err}") from None
    learner.init_state(batch)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"traxon: cannot create the output folder {out}: {err}") from None
    if resume_checkpoint is not None:
        learner.restore(resume_checkpoint)
    test = list(r.task.epoch(256, split="test"))
    errors: list[str] = []

    def evaluate() -> float:
        accs, weights = [], []
        for b in test:
            res = learner.evaluate(learner.state, b.x, b.y, b.mask)
            accs.append(res["accuracy"])
            weights.append(b.x.shape[1])
        return float(np.average(accs, weights=weights))

    def save(name: str) -> str | None:
        path = out / name
        try:
            return learner.save(path)
        except (OSError, ValueError, FloatingPointError) as err:
            # a full disk, a quota; or a state the learner refuses to save
            errors.append(f"checkpoint {path}: {err}")
            _warn(f"could not write the checkpoint {path}: {err}")
            return None

    # The stream is a pure function of the seed: a resumed run skips what it has seen.
    stream = itertools.islice(r.task.stream(args.seed, batch, split="train"), len(history), None)
    progress = None
    if not args.no_progress:
        progress = _Progress(
            f"{args.task}/{r.algorithm}", args.time_budget, len(history), iterations, spent
        )
    train_start = time.perf_counter()
    stopped_by = "iterations"
    best_path = out / "best.npz" if best_at is not None else None
    if len(history) >= iterations or spent >= args.time_budget:
        stopped_by = "already complete"
        _warn(
            f"the run in {out} is complete ({len(history)} of --iterations {iterations} batches, "
            f"{spent:.0f} s of --time-budget {args.time_budget:g} s); pass larger values to "
            "train on"
        )
    interrupt = _Interrupt()
    try:
        with interrupt:
            for i in range(len(history), iterations):
                if spent >= args.time_budget:
                    break
                # One batch at a time, taken here: fit(stream, n_batches=1) would draw (and
                # drop) one batch more than it trains on.
                history += learner.fit([next(stream)])
                jax.block_until_ready(learner.state.params)
                elapsed = spent + time.perf_counter() - train_start
                last = i + 1 == iterations
                if elapsed > args.time_budget:
                    last, stopped_by = True, "time_budget"
                if (i + 1) % args.eval_every == 0 or last:
                    acc = evaluate()
                    evaluations.append((i + 1, acc))
                    if acc > best:
                        best, best_at = acc, i + 1
                        if save("best.npz") is not None:
                            best_path = out / "best.npz"
                    if args.target_accuracy is not None and acc >= args.target_accuracy:
                        last, stopped_by = True, "target_accuracy"
                if progress is not None:
                    post = {"loss": f"{history[-1]['loss']:.3f}"}
                    if evaluations:
                        post["test_acc"] = f"{evaluations[-1][1]:.3f}"
                    progress.update(i + 1, elapsed, post)
                if last:
                    break
                if interrupt.requested:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    except FloatingPointError as err:
        # The learner refused a non-finite update and kept its last finite state: save that.
        stopped_by = "nonfinite"
        errors.append(f"training stopped: {err}")
        _warn(f"training stopped after {len(history)} batches: {err}")
    finally:
        if progress is not None:
            progress.close()
    train_s = spent + time.perf_counter() - train_start
    checkpoint = save("checkpoint.npz")
    try:
        _plots(learner, r, history, evaluations, out)
    except OSError as err:
        errors.append(f"plots in {out}: {err}")
        _warn(f"could not write the plots in {out}: {err}")
    summary = {
        "task": args.task,
        "algorithm": r.algorithm,
        "algorithm_options": algorithm_options,
        "test_accuracy": evaluations[-1][1] if evaluations else None,
        "tested_at": evaluations[-1][0] if evaluations else None,
        "best_test_accuracy": best if best_at is not None else None,
        "best_at": best_at,
        "steps": int(learner.state.step),
        "sequences": len(history),
        "batch_size": batch,
        "learning_rate": lr,
        "stopped_by": stopped_by,
        "interrupted": stopped_by == "interrupt",
        "train_s": round(train_s, 2),
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "out": str(out),
        "checkpoint": checkpoint,
        "best_checkpoint": str(best_path) if best_path is not None else None,
        "resumed_from": str(resume_checkpoint) if resume_checkpoint is not None else None,
        "errors": errors,
    }
    record = {
        "train": history,
        "test": evaluations,
        "train_s": train_s,
        "algorithm_options": algorithm_options,
        "best_test_accuracy": summary["best_test_accuracy"],
        "best_at": best_at,
    }
    for name, text in (
        ("history.json", json.dumps(record)),
        ("summary.json", json.dumps(summary, indent=2)),
    ):
        try:
            (out / name).write_text(text)
        except OSError as err:
            errors.append(f"{out / name}: {err}")
            _warn(f"could not write {out / name}: {err}")
    if summary["interrupted"]:
        where = f" to {out}" if not errors else f" to {out} (but see the errors above)"
        _warn(
            f"interrupted after {len(history)} batches; checkpoint, history, plots and summary "
            f"written{where}; continue with --resume {out}"
        )
    return summary


def _options_text(options: dict[str, Any]) -> str:
    if not options:
        return "(none)"
    return " ".join(f"{k}={json.dumps(v)}" for k, v in options.items())


def _plots(learner: Any, r: Any, history: list, evaluations: list, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    from traxon.plot import learning_curve, raster

    if history:
        fig = learning_curve(history, evaluations=evaluations)
        fig.savefig(out / "learning_curve.png", dpi=120)
        plt.close(fig)
    b = r.task.sample(12345, 1, split="test")
    state = r.network.init_state(1, learner.state.params[next(iter(learner.state.params))].dtype)
    res = r.network.simulate(learner.state.params, state, jnp.asarray(b.x))
    spikes = {k: v["spike"] for k, v in res.record.items() if k != "readout"}
    fig = raster(spikes, dt=r.network.dt, title=f"{r.task.name}: spikes of one test sequence")
    fig.savefig(out / "raster.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m traxon`` and of the ``traxon`` console script.

    Returns the exit status: 0, 130 after Ctrl-C, 1 when a file could not be written."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.resume is not None:
            checkpoint, _ = _resume_paths(args.resume)
            if not checkpoint.is_file():
                parser.error(f"argument --resume: no checkpoint at {str(checkpoint)!r}")
        summary = train(args)
        print(json.dumps(summary), flush=True)
        if summary["interrupted"]:
            return 130
        if summary["errors"]:
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
