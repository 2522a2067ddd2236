"""What the analyze_model stage costs: its wall time on the default run's data, at two caps of
`analyze_model.max_questions`, and the marginal cost per 1,000 questions between them.

Needs the default pipeline's outputs (`snakemake --cores all` or `dvc repro`): data/ and
models/film.pt. Writes into a temporary folder, never into results/.

    python benchmarks/bench_analysis.py [--params params.yaml] [--sizes 500 2500]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path

from filmclevr.analysis import analyze
from filmclevr.params import load_params

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", type=Path, default=REPO / "params.yaml")
    p.add_argument("--sizes", type=int, nargs=2, default=(500, 2500), help="two question caps")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    section = params["analyze_model"]
    seconds = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
            start = time.perf_counter()
            metrics = analyze(
                REPO / "models/film.pt", REPO / "data/shards", REPO / "data/tokens",
                REPO / "data/clevr", Path(tmp) / "analysis",
                split=section["split"], train_split=params["get_data"]["splits"][0],
                examples=section["examples"], max_questions=size,
                tsne_questions=section["tsne_questions"], noise_levels=section["noise_levels"],
                batch_size=section["batch_size"], seed=section["seed"], device="cpu",
            )  # fmt: skip
            seconds[metrics["context"]["questions"]] = time.perf_counter() - start
    (n0, t0), (n1, t1) = sorted(seconds.items())
    print(f"{'questions':>10} {'seconds':>8}")
    for n, t in sorted(seconds.items()):
        print(f"{n:>10,} {t:>8.1f}")
    if n1 > n0:
        print(f"marginal cost: {1000 * (t1 - t0) / (n1 - n0):.1f} s per 1,000 questions")


if __name__ == "__main__":
    main()
