"""Does a data stage's memory grow with the number of questions? Peak RSS of `tokenize_questions`
and `write_shards` at two sizes of one split, side by side, with the floor of a process that only
imports the stage.

Builds a small mini-CLEVR train split (`--images` images, resized), then question files of
`--questions` and of ten times as many questions over those images (the generated questions
repeated, renumbered), the larger at CLEVR's size by default (700,000). Each stage runs in a
fresh process whose peak RSS is read back, so the columns do not share a high-water mark:

    python benchmarks/bench_stage_memory.py [--images 200] [--questions 70000]

A stage that streams stays near its floor at both sizes; one that holds the split grows by the
same megabytes per 100,000 questions at any size (the last column).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filmclevr import clevr, fileio
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
start = time.perf_counter()
{call}
seconds = time.perf_counter() - start
status = Path("/proc/self/status").read_text()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024, seconds)
"""


def run_child(imports: str, call: str, root: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a fresh Python process running `call` after `imports`.

    The peak is the child's VmHWM (Linux): its rusage would count the memory of the process it
    was forked from.
    """
    code = CHILD.format(imports=imports, call=call)
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], check=True, capture_output=True, text=True
    ).stdout
    rss, seconds = out.split()
    return float(rss), float(seconds)


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
    args = p.parse_args()
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
            stage: run_child(imports, "pass", root)[0] for stage, (imports, _) in STAGES.items()
        }
        measured: dict[str, list[tuple[float, float]]] = {stage: [] for stage in STAGES}
        for count in sizes:
            write_questions(root, document["info"], document["questions"], count)
            for stage, (imports, call) in STAGES.items():  # in order: tokens, then shards of them
                measured[stage].append(run_child(imports, call, root))
    print(f"Peak RSS (MB) of one process, a train split of {args.images} images ({time.ctime()}):")
    head = " ".join(f"{f'{n:,} q':>18}" for n in sizes)
    print(f"{'stage':<20} {'floor':>7} {head} {'MB per 100k q':>14}")
    for stage, runs in measured.items():
        cells = " ".join(f"{rss:8.0f} ({seconds:5.1f} s)" for rss, seconds in runs)
        (small, _), (large, _) = runs
        growth = (large - small) / ((sizes[1] - sizes[0]) / 100_000)
        print(f"{stage:<20} {floors[stage]:7.0f} {cells} {growth:14.1f}")


if __name__ == "__main__":
    main()
