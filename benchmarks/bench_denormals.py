"""Training speed from a trained checkpoint, denormal floats kept and flushed, side by side.

A model trained long with weight decay holds weights below float32's normal range (about
1.2e-38); an x86 CPU computes with such numbers many times more slowly. The model stages treat
them as zero (`filmclevr.distributed.flush_denormals`). This times training steps
(`bench_train.measure`: random data of the model's shapes, questions of up to 40 tokens) from
the checkpoint's weights, in float32 and in bf16 autocast, with the CPU's denormals kept and
flushed. Each row runs in a fresh process, since the mode must be set before torch's thread pool
starts (its threads copy the mode of the thread that starts them).

    python benchmarks/bench_denormals.py \\
        results/reference/mini-clevr-size-clevr-look-curriculum/film.pt
    python benchmarks/bench_denormals.py CHECKPOINT --steps 20 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTION_LENGTH = 40  # tokens: CLEVR's longer questions, which the GRU reads one by one


def one_row(checkpoint: Path, flush: bool, bf16: bool, steps: int) -> dict:
    """Samples/s of `steps` training steps after 3 warm-up ones, in this process."""
    import torch

    if flush:
        torch.set_flush_denormal(True)  # before any parallel torch operation
    from bench_train import measure  # this directory: the script's own

    from filmclevr.checkpoint import load_checkpoint
    from filmclevr.model import FiLMConfig

    saved = load_checkpoint(checkpoint)
    rate = measure(
        FiLMConfig.from_dict(saved["model_config"]),
        64,
        torch.device("cpu"),
        bf16=bf16,
        channels_last=False,
        compile=False,
        warmup=3,
        steps=steps,
        vocab_size=saved["vocab_size"],
        num_answers=saved["num_answers"],
        question_length=QUESTION_LENGTH,
        weights=saved["model"],
    )
    return {"flush": flush, "bf16": bf16, "samples_per_s": rate, "threads": torch.get_num_threads()}


def denormal_weights(checkpoint: Path) -> int:
    """How many of the checkpoint's weights are denormal, counted with denormals kept (a
    process that flushes them reads them as zeros)."""
    import torch

    from filmclevr.checkpoint import load_checkpoint

    tiny = torch.finfo(torch.float32).tiny
    weights = [w for w in load_checkpoint(checkpoint)["model"].values() if w.is_floating_point()]
    return sum(int(((w.abs() > 0) & (w.abs() < tiny)).sum()) for w in weights)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a trained checkpoint (film.pt or last.pt)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per row (default 10)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--row", help=argparse.SUPPRESS)  # "flush,bf16": one row, in this process
    args = p.parse_args()
    if args.row:
        flush, bf16 = (v == "1" for v in args.row.split(","))
        print(json.dumps(one_row(args.checkpoint, flush, bf16, args.steps)))
        return 0

    rows = []
    for bf16 in (False, True):
        for flush in (False, True):
            command = [sys.executable, __file__, str(args.checkpoint), "--steps", str(args.steps)]
            command += ["--row", f"{int(flush)},{int(bf16)}"]
            out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    denormals = denormal_weights(args.checkpoint)
    print(f"# {args.checkpoint}: {denormals:,} denormal weights; CPU, {rows[0]['threads']} threads")
    print(f"{'precision':<9} {'denormals':<9} {'samples/s':>10} {'ratio':>6}")
    for row in rows:
        kept = next(r for r in rows if r["bf16"] == row["bf16"] and not r["flush"])
        row["ratio_to_kept"] = row["samples_per_s"] / kept["samples_per_s"]
        print(
            f"{'bf16' if row['bf16'] else 'float32':<9} "
            f"{'flushed' if row['flush'] else 'kept':<9} {row['samples_per_s']:>10.1f} "
            f"{row['ratio_to_kept']:>5.2f}x"
        )
    if args.json:
        import torch

        from filmclevr.distributed import machine_description
        from filmclevr.fileio import write_json_atomic

        machine = machine_description(torch.device("cpu"))
        report = {"checkpoint": str(args.checkpoint), "denormal_weights": denormals}
        write_json_atomic(args.json, {**report, "machine": machine, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
