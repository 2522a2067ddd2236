"""mini-CLEVR generation speed: CLEVR's look and language beside mini's, and beside the generator
of an earlier commit.

Issue 24's target for mini-CLEVR in CLEVR's look and language is at least half the images per
second per core of the generator as it was when the issue was filed (`--baseline`, by default
dfdb21e, the last commit before that work). The generator's own look has become faster since
(its scene sampler), so the script prints both ratios, each measured in this one run:

    python benchmarks/bench_generation.py [--images 150] [--rounds 7] [--baseline REV] [--json FILE]

Each generator runs in a fresh process, one worker, on the first `--images` train images of
seed 0 (3-10 objects, 10 questions per image); a few images are generated first, untimed, so
that the imports and the question templates' set-up, paid once per run, are not counted. Times
are CPU seconds (render, questions and PNG files), so the rates are per core. One run of a
generator can vary by 10% or more on a shared virtual machine, so the three take turns for
`--rounds` rounds and each one's median rate is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from filmclevr import fileio
from filmclevr.ask import positive_int
from filmclevr.distributed import cpu_machine
from filmclevr.evaluate import git_commit

ROOT = Path(__file__).resolve().parents[1]
WARM_UP_IMAGES = 3

# Runs in the child process, with the generator's source tree first on sys.path.
_CHILD = """
import contextlib, io, json, os, sys, tempfile, time
from pathlib import Path
from filmclevr.mini import generate_mini_clevr

images, warm_up, look, language = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
extra = {} if look == "baseline" else {"look": look, "language": language}

def generate(root, n):
    with contextlib.redirect_stderr(io.StringIO()):
        generate_mini_clevr(root, splits={"train": n}, seed=0, questions_per_image=10,
                            min_objects=3, max_objects=10, workers=1, **extra)

def cpu():
    return time.process_time()

with tempfile.TemporaryDirectory() as tmp:
    generate(Path(tmp) / "warm", warm_up)
    start = cpu()
    generate(Path(tmp) / "timed", images)
    seconds = cpu() - start
modules = [m.__file__ for name, m in sys.modules.items() if name.split(".")[0] == "filmclevr"]
print(json.dumps({"images": images, "cpu_seconds": seconds, "modules": modules}))
"""


def time_generator(source: Path, images: int, look: str, language: str) -> float:
    """Images per CPU-second of the generator in `source` (a project tree)."""
    env = dict(os.environ, PYTHONPATH=str(source), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(images), str(WARM_UP_IMAGES), look, language],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise SystemExit(f"the generator in {source} failed:\n{out.stderr[-2000:]}")
    result = json.loads(lines[-1])
    # An editable install could lend the child modules from another tree: refuse that.
    strays = [
        m for m in result["modules"] if not Path(m).resolve().is_relative_to(source.resolve())
    ]
    if strays:
        raise SystemExit(f"the run meant for {source} imported {strays[0]}")
    return result["images"] / result["cpu_seconds"]


def export_commit(rev: str, into: Path) -> Path:
    """The project tree at `rev` (its tracked files), unpacked under `into`."""
    archive = into / "tree.tar"
    made = subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), rev],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:  # e.g. a shallow clone without that commit
        raise SystemExit(
            f"--baseline {rev}: git cannot export it from {ROOT} ({made.stderr.strip()}); "
            "fetch the full history or name another commit"
        )
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=positive_int, default=150, help="images per generator run")
    p.add_argument("--rounds", type=positive_int, default=7, help="runs of each generator")
    p.add_argument("--baseline", default="dfdb21e", help="the earlier commit's generator")
    p.add_argument("--json", type=Path, help="also write the measurements here")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_generation_") as tmp:
        generators = {  # key: (label, source tree, look, language)
            "baseline_mini_look": (
                f"baseline {args.baseline}, mini look",
                export_commit(args.baseline, Path(tmp)),
                "baseline",
                "",
            ),
            "mini_look": ("mini look + language", ROOT, "mini", "mini"),
            "clevr_look": ("CLEVR look + language", ROOT, "clevr", "clevr"),
        }
        runs: dict[str, list[float]] = {key: [] for key in generators}
        for _ in range(args.rounds):
            for key, (_, source, look, language) in generators.items():
                runs[key].append(time_generator(source, args.images, look, language))
    rates = {key: statistics.median(values) for key, values in runs.items()}
    clevr, mini, baseline = rates["clevr_look"], rates["mini_look"], rates["baseline_mini_look"]
    print(f"\n{args.images} train images per run, {args.rounds} runs per generator in turns; "
          "images per CPU-second (one process)\n")  # fmt: skip
    print("| generator | median images/s per core | runs | CLEVR look's ratio to it |")
    print("|---|---:|---|---:|")
    for key, rate in rates.items():
        each = ", ".join(f"{r:.2f}" for r in runs[key])
        print(f"| {generators[key][0]} | {rate:.2f} | {each} | {clevr / rate:.2f} |")
    if args.json:
        fileio.write_json_atomic(
            args.json,
            {
                "what": "benchmarks/bench_generation.py: mini-CLEVR generation, images per "
                "CPU-second of one process (render, questions, PNG files)",
                "machine": cpu_machine(),
                "commit": git_commit(ROOT),
                "baseline_commit": args.baseline,
                "images": args.images,
                "rounds": args.rounds,
                "runs": {key: [round(r, 3) for r in values] for key, values in runs.items()},
                "images_per_second": {key: round(rate, 3) for key, rate in rates.items()},
                "clevr_look_over": {
                    "baseline_mini_look": round(clevr / baseline, 3),
                    "mini_look": round(clevr / mini, 3),
                },
            },
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
