"""How long the README's test commands take on this machine: `pytest` (the suite) and
`pytest -m slow` (both engines end to end on tiny data, the engine faults), each in its own
process, one after the other, with what passed. Run it with nothing else on the CPU.

    python benchmarks/bench_tests.py [--only fast|slow] [--json FILE]

The times exclude the install. A suite that does not pass is reported and nothing is written:
its time would not be the time of the suite.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from filmclevr import fileio
from filmclevr.distributed import cpu_machine
from filmclevr.evaluate import git_commit

ROOT = Path(__file__).resolve().parents[1]
# The README's commands, as run from the repository root.
SUITES = {"fast": ["pytest", "-q"], "slow": ["pytest", "-q", "-m", "slow"]}
_OUTCOME = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)\b")


def run_suite(command: list[str]) -> dict[str, object]:
    """Wall and CPU seconds of one suite, its exit status and pytest's closing counts."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = done.stdout.strip().splitlines()
    outcome = {kind: int(n) for n, kind in _OUTCOME.findall(lines[-1] if lines else "")}
    return {
        "command": " ".join(command),
        "returncode": done.returncode,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "outcome": outcome,
        "tail": lines[-15:] if done.returncode else [],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", choices=sorted(SUITES), help="time one suite")
    p.add_argument("--json", type=Path, help="also write the measurements here")
    args = p.parse_args()
    names = [args.only] if args.only else list(SUITES)
    results = {}
    for name in names:
        print(f"running `{' '.join(SUITES[name])}` ...", flush=True)
        results[name] = result = run_suite(SUITES[name])
        counts = ", ".join(f"{n} {kind}" for kind, n in result["outcome"].items())
        print(
            f"{result['command']:<20} {result['seconds']:>8.1f} s wall "
            f"{result['cpu_seconds']:>8.1f} s CPU  exit {result['returncode']}  {counts}",
            flush=True,
        )
        if result["returncode"]:
            print("\n".join(result["tail"]), file=sys.stderr)
    if any(r["returncode"] for r in results.values()):
        print("a suite failed: nothing written", file=sys.stderr)
        return 1
    if args.json:
        document = {
            "machine": cpu_machine(),
            "commit": git_commit(ROOT),
            "suites": {
                name: {k: v for k, v in r.items() if k != "tail"} for name, r in results.items()
            },
        }
        fileio.write_json_atomic(args.json, document)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
