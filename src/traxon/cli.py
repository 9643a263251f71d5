"""The command line: ``python -m traxon train --task evidence --algorithm es_d_rtrl``.

Trains a built-in task online with a progress bar, evaluates on the task's held-out set,
writes a learning-curve and a spike-raster PNG (and a checkpoint, the history and the
summary) to ``--out``, and prints a JSON summary as its last line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="traxon", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a built-in task online")
    train.add_argument("--task", default="evidence", choices=["evidence", "dms", "digits", "shd"])
    train.add_argument(
        "--algorithm", default=None, help="d_rtrl, es_d_rtrl, bptt or rtrl (default: per task)"
    )
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    train.add_argument("--iterations", type=int, default=None, help="sequences to train on")
    train.add_argument(
        "--time-budget",
        type=float,
        default=300.0,
        help="stop training after this many seconds (default 300)",
    )
    train.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        help="stop as soon as the test accuracy reaches this value",
    )
    train.add_argument("--eval-every", type=int, default=25, help="sequences between evaluations")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=None, help="output folder (default runs/...)")
    train.add_argument("--quick", action="store_true", help="a short task version (smoke test)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--resume", type=Path, default=None, help="continue from a checkpoint")
    train.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task constructor option, e.g. --task-option delay_ms=500 (repeatable)",
    )
    train.add_argument("--data", type=Path, default=None, help="SHD: the training HDF5 file")
    train.add_argument("--test-data", type=Path, default=None, help="SHD: the test HDF5 file")
    return parser


def _task_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in args.task_option:
        if "=" not in item:
            raise SystemExit(f"--task-option must look like KEY=VALUE; got {item!r}")
        key, value = item.split("=", 1)
        options[key] = _parse_value(value)
    if args.task == "shd":
        if args.data is None:
            raise SystemExit("--task shd needs --data PATH (and --test-data PATH) to SHD files.")
        options.setdefault("train_path", str(args.data))
        if args.test_data is not None:
            options.setdefault("test_path", str(args.test_data))
    return options


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the ``train`` command; returns the summary it prints."""
    import jax
    import numpy as np
    import optax

    from traxon.learn import online_learner
    from traxon.recipes import recipe

    start = time.perf_counter()
    r = recipe(args.task, args.algorithm, quick=args.quick, **_task_options(args))
    batch = args.batch_size or r.batch_size
    lr = args.lr or r.learning_rate
    iterations = args.iterations or r.iterations
    out = args.out or Path("runs") / f"{args.task}-{r.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    learner = online_learner(
        r.network,
        r.algorithm,
        optax.adam(lr),
        "cross_entropy",
        update_every=r.update_every,
        sequence_length=r.task.n_steps,
        rate_target=r.rate_target,
        rate_reg=r.rate_reg,
        clip_norm=r.clip_norm,
        seed=args.seed,
    )
    learner.init_state(batch)
    if args.resume is not None:
        learner.restore(args.resume)
    test = list(r.task.epoch(256, split="test"))

    def evaluate() -> float:
        accs, weights = [], []
        for b in test:
            res = learner.evaluate(learner.state, b.x, b.y, b.mask)
            accs.append(res["accuracy"])
            weights.append(b.x.shape[1])
        return float(np.average(accs, weights=weights))

    history: list[dict[str, float]] = []
    evaluations: list[tuple[int, float]] = []
    stream = r.task.stream(args.seed, batch, split="train")
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, unit="seq", file=sys.stderr, desc=f"{args.task}/{r.algorithm}")
    train_start = time.perf_counter()
    best = 0.0
    try:
        for i in range(iterations):
            history += learner.fit(stream, n_batches=1)
            jax.block_until_ready(learner.state.params)
            elapsed = time.perf_counter() - train_start
            last = i + 1 == iterations or elapsed > args.time_budget
            if (i + 1) % args.eval_every == 0 or last:
                acc = evaluate()
                best = max(best, acc)
                evaluations.append((i + 1, acc))
                if args.target_accuracy is not None and acc >= args.target_accuracy:
                    last = True
            if bar is not None:
                post = {"loss": f"{history[-1]['loss']:.3f}"}
                if evaluations:
                    post["test_acc"] = f"{evaluations[-1][1]:.3f}"
                bar.set_postfix(post)
                bar.update(1)
            if last:
                break
    finally:
        if bar is not None:
            bar.close()
    train_s = time.perf_counter() - train_start
    learner.save(out / "checkpoint.npz")
    _plots(learner, r, history, evaluations, out)
    summary = {
        "task": args.task,
        "algorithm": r.algorithm,
        "test_accuracy": evaluations[-1][1] if evaluations else None,
        "best_test_accuracy": best,
        "steps": int(learner.state.step),
        "sequences": len(history),
        "batch_size": batch,
        "learning_rate": lr,
        "train_s": round(train_s, 2),
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "out": str(out),
    }
    (out / "history.json").write_text(json.dumps({"train": history, "test": evaluations}))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _plots(learner: Any, r: Any, history: list, evaluations: list, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    from traxon.plot import learning_curve, raster

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
    """Entry point of ``python -m traxon`` and of the ``traxon`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "train":
        summary = train(args)
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
