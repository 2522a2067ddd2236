"""Does a data stage's memory grow with the number of questions? Peak RSS of `tokenize_questions`
and `write_shards` at two sizes of one split, side by side, with the floor of a process that only
imports the stage.

Builds a small mini-CLEVR train split (`--images` images, resized), then question files of
`--questions` and of ten times as many questions over those images (the generated questions
repeated, renumbered), the larger at CLEVR's size by default (700,000). Each stage runs in a
fresh process whose peak RSS is read back, so the columns do not share a high-water mark:

    python benchmarks/bench_stage_memory.py [--images 200] [--questions 70000]
        [--code CHECKOUT] [--json out.json]

`--code` runs the stages from another checkout's `filmclevr` (for example an older commit's
worktree, for a before-and-after on one machine), the split still built by this one; `--json`
keeps the table with the commit measured and the CPU.

A stage that streams stays near its floor at both sizes; one that holds the split grows by the
same megabytes per 100,000 questions at any size (the last column).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filmclevr import clevr, fileio
from filmclevr.distributed import cpu_machine
from filmclevr.mini.generate import generate_mini_clevr
from filmclevr.resize import resize_images

STAGES = {  # each run in its own process, in this order: (import, call)
    "tokenize_questions": (
        "from filmclevr.tokenize import tokenize_questions",
        "tokenize_questions(root / 'clevr', root / 'tokens', splits=['train'])",
    ),
    "write_shards": (
        "from filmclevr.shards import write_shards",
        "write_shards(root / 'resized', root / 'tokens', root / 'shards', splits=['train'], "
        "images_per_shard=100, progress=False)",
    ),
}
CHILD = """
import re, sys, time
from pathlib import Path
{imports}
root = Path(sys.argv[1])
import filmclevr
start = time.perf_counter()
{call}
seconds = time.perf_counter() - start
status = Path("/proc/self/status").read_text()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024, seconds,
      filmclevr.__file__)
"""


def run_child(
    imports: str, call: str, root: Path, code_root: Path | None = None
) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a fresh Python process running `call` after `imports`,
    with `code_root`'s `filmclevr` when given.

    The peak is the child's VmHWM (Linux): its rusage would count the memory of the process it
    was forked from.
    """
    code = CHILD.format(imports=imports, call=call)
    env = dict(os.environ)
    if code_root is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code_root), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], check=True, capture_output=True, text=True,
        env=env, cwd=root,  # not this checkout: `-c` puts the working folder first on the path
    ).stdout  # fmt: skip
    rss, seconds, package = out.split()
    expected = (code_root or Path(__file__).resolve().parents[1]) / "filmclevr"
    if Path(package).resolve().parent != expected.resolve():
        raise RuntimeError(f"the stage ran {package}, not the filmclevr of {expected.parent}")
    return float(rss), float(seconds)


def commit_of(checkout: Path) -> str:
    """The checkout's commit, marked -dirty when its tracked files differ from it."""
    git = ["git", "-C", str(checkout)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "filmclevr"]).returncode
    return commit + ("-dirty" if dirty else "")


def write_questions(root: Path, info: dict, questions: list[dict], count: int) -> None:
    """The train question file with `count` questions: `questions` repeated and renumbered."""
    path = clevr.questions_path(root / "clevr", "train")
    with fileio.json_list_writer(path, {"info": info}, "questions") as append:
        for index in range(count):
            append(dict(questions[index % len(questions)], question_index=index))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=200, help="train images (default 200)")
    p.add_argument(
        "--questions", type=int, default=70_000, help="the smaller size (default 70,000)"
    )
    p.add_argument("--code", type=Path, help="run the stages from this checkout's filmclevr")
    p.add_argument("--json", type=Path, help="write the table here")
    args = p.parse_args()
    checkout = (args.code or Path(__file__).resolve().parents[1]).resolve()
    sizes = (args.questions, 10 * args.questions)
    with tempfile.TemporaryDirectory(prefix="bench_stage_memory_") as tmp:
        root = Path(tmp)
        generate_mini_clevr(root / "clevr", splits={"train": args.images}, seed=0)
        resize_images(
            root / "clevr", root / "resized", splits=["train"], image_size=64, progress=False
        )
        path = clevr.questions_path(root / "clevr", "train")
        document = json.loads(path.read_text())  # the generated split: small
        floors = {
            stage: run_child(imports, "pass", root, args.code)[0]
            for stage, (imports, _) in STAGES.items()
        }
        measured: dict[str, list[tuple[float, float]]] = {stage: [] for stage in STAGES}
        for count in sizes:
            write_questions(root, document["info"], document["questions"], count)
            for stage, (imports, call) in STAGES.items():  # in order: tokens, then shards of them
                measured[stage].append(run_child(imports, call, root, args.code))
    commit = commit_of(checkout)
    print(f"Peak RSS (MB) of one process, a train split of {args.images} images, the stages of "
          f"{commit} ({time.ctime()}):")  # fmt: skip
    head = " ".join(f"{f'{n:,} q':>18}" for n in sizes)
    print(f"{'stage':<20} {'floor':>7} {head} {'MB per 100k q':>14}")
    table: dict[str, dict] = {}
    for stage, runs in measured.items():
        cells = " ".join(f"{rss:8.0f} ({seconds:5.1f} s)" for rss, seconds in runs)
        (small, _), (large, _) = runs
        growth = (large - small) / ((sizes[1] - sizes[0]) / 100_000)
        print(f"{stage:<20} {floors[stage]:7.0f} {cells} {growth:14.1f}")
        table[stage] = {
            "floor_mb": floors[stage],
            "sizes": {str(n): {"peak_rss_mb": rss, "seconds": seconds}
                      for n, (rss, seconds) in zip(sizes, runs, strict=True)},
            "mb_per_100k_questions": growth,
        }  # fmt: skip
    if args.json is not None:
        fileio.write_json_atomic(args.json, {
            "commit": commit, "images": args.images, "questions": list(sizes),
            "machine": cpu_machine(), "stages": table,
        })  # fmt: skip


if __name__ == "__main__":
    main()
