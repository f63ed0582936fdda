"""Linear probe speed and agreement: clipforge's torch L-BFGS vs scikit-learn LogisticRegression(lbfgs).

Same features, same C = 1/lambda, max_iter 1000 for both. Features: real CIFAR-10 (5,000 train / 1,000 test
from ../shared/data) through a seeded random tiny ViT (pre-projection, 64-d), plus a synthetic 256-d, 50-class
problem (Gaussian classes). Fits are interleaved round by round; medians reported.
Writes benchmarks/results/linear_probe.json and .md.

    .venv/bin/python -m benchmarks.linear_probe_bench [--smoke] [--device cuda] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.harness import machine_info
from clipforge.evaluate.linear_probe import fit_logistic_regression
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(
    os.environ.get("CLIPFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def cifar_features(limit: int | None) -> tuple:
    from clipforge.evaluate.datasets import cifar
    from clipforge.evaluate.features import extract_features
    from clipforge.models import CLIP, get_config
    from clipforge.transforms import image_transform

    torch.manual_seed(0)
    config = get_config("tiny-vit")
    model = CLIP(config).eval()
    transform = image_transform(config.preprocess)
    train, test = cifar(SHARED / "cifar10", "train", transform), cifar(SHARED / "cifar10", "test", transform)
    if limit:
        train.samples, test.samples = train.samples[:: 5000 // limit], test.samples[:: 5000 // limit]
    x, y = extract_features(model, train, "pre-projection", progress=False)
    xt, yt = extract_features(model, test, "pre-projection", progress=False)
    return x, y, xt, yt


def synthetic_features(n_train: int, n_test: int, dim: int = 256, classes: int = 50) -> tuple:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(classes, dim, generator=g)

    def draw(n):
        y = torch.randint(0, classes, (n,), generator=g)
        return means[y] * 0.15 + torch.randn(n, dim, generator=g), y

    return (*draw(n_train), *draw(n_test))


def time_pair(data: tuple, l2_lambda: float, device: str, rounds: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    x, y, xt, yt = data
    xd, yd, xtd = x.to(device), y.to(device), xt.to(device)
    times = {"torch": [], "sklearn": []}
    acc = {}
    for _ in range(rounds):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        clf = fit_logistic_regression(xd, yd, l2_lambda, int(y.max()) + 1)
        pred = clf.logits(xtd).argmax(-1).cpu()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times["torch"].append(time.perf_counter() - t0)
        acc["torch"] = float((pred == yt).float().mean())
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk = LogisticRegression(C=1 / l2_lambda, solver="lbfgs", max_iter=1000).fit(x.numpy(), y.numpy())
        acc["sklearn"] = float(sk.score(xt.numpy(), yt.numpy()))
        times["sklearn"].append(time.perf_counter() - t0)
    torch_s, sk_s = statistics.median(times["torch"]), statistics.median(times["sklearn"])
    return {
        "lambda": l2_lambda,
        "torch_s": round(torch_s, 3),
        "sklearn_s": round(sk_s, 3),
        "speedup_vs_sklearn": round(sk_s / torch_s, 2),
        "acc_torch": round(100 * acc["torch"], 2),
        "acc_sklearn": round(100 * acc["sklearn"], 2),
        "acc_diff_points": round(100 * (acc["torch"] - acc["sklearn"]), 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    problems = {
        "cifar10 tiny-vit 64-d": cifar_features(500 if args.smoke else None),
        "synthetic 256-d 50-class": synthetic_features(
            1000 if args.smoke else 4000, 500 if args.smoke else 2000
        ),
    }
    lambdas = [1.0, 100.0] if args.smoke else [0.01, 1.0, 100.0]
    rows = []
    jobs = [(name, lam) for name in problems for lam in lambdas]
    for name, lam in tqdm(jobs, desc="linear probe bench"):
        x = problems[name][0]
        rows.append({"problem": name, "n_train": x.shape[0], "dim": x.shape[1],
                     **time_pair(problems[name], lam, args.device, 1 if args.smoke else args.rounds)})  # fmt: skip
    results = {"device": args.device, "machine": machine_info(args.threads), "rows": rows}
    summary = (
        f"# Linear probe: torch L-BFGS vs scikit-learn (device {args.device}, {args.threads} thread(s))\n\n"
        + markdown_table(rows, floatfmt=".3f")
        + "\nSame features and C = 1/lambda, max_iter 1000; medians of interleaved rounds.\n"
    )
    name = "linear_probe" + ("_smoke" if args.smoke else "") + ("" if args.device == "cpu" else "_gpu")
    results["files"] = write_results(args.out, name, results, summary)
    print(summary)
    return results


if __name__ == "__main__":
    main()
