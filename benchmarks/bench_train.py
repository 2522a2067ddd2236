"""Training throughput (samples/s) of the demo and the paper configuration, side by side.

Times `filmclevr.train.train_step` (forward, backward, Adam step: the loop's own step) on random
data of the right shapes, after warm-up steps, so the numbers leave the data loader out. On a
GPU every configuration runs with each combination of the speed switches (bf16 autocast,
channels-last, torch.compile); on a CPU in float32, bf16 and bf16 + channels-last. The ratio column
compares each row with the float32 eager row of its configuration.

    python benchmarks/bench_train.py                 # both configurations, this machine
    python benchmarks/bench_train.py --only demo --steps 20
    python benchmarks/bench_train.py --only demo --demo-batch 64   # the demo at another batch
    python benchmarks/bench_train.py --grid short    # on a GPU: 4 rows a configuration, not 8

The demo configuration is the `model:` and batch size of the parameters file (params.yaml by
default). The paper configuration is FiLMConfig() at 224x224 with the paper's batch of 64
(TrainConfig()).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import torch

from filmclevr.distributed import resolve_device, set_seed
from filmclevr.model import FiLMConfig, build_model, count_parameters
from filmclevr.params import load_params, model_overrides
from filmclevr.train import TrainConfig, build_optimizer, train_step

REPO = Path(__file__).resolve().parents[1]
VOCAB_SIZE = 93  # CLEVR's question vocabulary with the 4 special tokens (clevr-iep)
NUM_ANSWERS = 32  # 28 answers + 4 special tokens, as clevr-iep's answer vocabulary
QUESTION_LENGTH = 24  # tokens incl. <START>/<END>; CLEVR questions average about 18 words


def demo_setup(params_path: Path) -> tuple[FiLMConfig, int, str]:
    """(model config, batch size, where it came from) of a parameters file."""
    params = load_params(params_path)
    batch = TrainConfig.from_dict(params["train_model"]).batch_size
    return FiLMConfig.from_dict(model_overrides(params)), batch, f"{params_path.name} model:"


def random_batch(
    config: FiLMConfig,
    batch: int,
    device: torch.device,
    *,
    vocab_size: int = VOCAB_SIZE,
    num_answers: int = NUM_ANSWERS,
    question_length: int = QUESTION_LENGTH,
) -> tuple:
    """(images uint8, questions, lengths, answers) of the model's shapes, on `device`."""
    g = torch.Generator().manual_seed(0)
    size = config.image_size
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    lengths = torch.randint(8, question_length + 1, (batch,), generator=g)
    questions = torch.randint(4, vocab_size, (batch, question_length), generator=g)
    questions[torch.arange(question_length)[None, :] >= lengths[:, None]] = 0  # <NULL> padding
    answers = torch.randint(4, num_answers, (batch,), generator=g)
    return tuple(t.to(device) for t in (images, questions, lengths, answers))


def measure(
    config: FiLMConfig,
    batch: int,
    device: torch.device,
    *,
    bf16: bool,
    channels_last: bool,
    compile: bool,
    warmup: int,
    steps: int,
    vocab_size: int = VOCAB_SIZE,
    num_answers: int = NUM_ANSWERS,
    question_length: int = QUESTION_LENGTH,
    weights: dict[str, torch.Tensor] | None = None,
) -> float:
    """Samples per second of `steps` training steps after `warmup` ones, from fresh weights or
    from `weights` (a checkpoint's state dict)."""
    set_seed(0)
    model = build_model(config, vocab_size, num_answers)
    if weights is not None:
        model.load_state_dict(weights)
    model = model.to(device).train()
    images, questions, lengths, answers = random_batch(
        config,
        batch,
        device,
        vocab_size=vocab_size,
        num_answers=num_answers,
        question_length=question_length,
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, TrainConfig(), device)
    step_model = torch.compile(model) if compile else model

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        train_step(step_model, optimizer, images, questions, lengths, answers, bf16=bf16)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(step_model, optimizer, images, questions, lengths, answers, bf16=bf16)
    sync()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", type=Path, default=REPO / "params.yaml")
    p.add_argument("--only", choices=["demo", "paper"], help="run one configuration")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--warmup", type=int, help="warm-up steps (default: 3 on a GPU, 1 on a CPU)")
    p.add_argument("--steps", type=int, help="timed steps (default: 20 on a GPU; CPU: see below)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--demo-batch", type=int, help="the demo's batch size (default: the file's)")
    p.add_argument(
        "--grid",
        choices=["full", "short"],
        default="full",
        help="GPU: every combination of the switches (full), or float32, bf16, bf16 + "
        "channels-last, and all three with compile (short: two compilations, not eight)",
    )
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True  # as train() does on CUDA

    demo, demo_batch, source = demo_setup(args.params)
    demo_batch = args.demo_batch or demo_batch
    paper = FiLMConfig()
    setups = [("demo", demo, demo_batch), ("paper", paper, TrainConfig().batch_size)]
    setups = [s for s in setups if args.only in (None, s[0])]
    # On a GPU: every combination of the three switches. On a CPU: float32, bf16 autocast (fast
    # where the CPU has bf16 instructions) and bf16 + channels-last (the demo's); compiling the
    # paper model alone takes minutes on two cores.
    switches = itertools.product([False, True], repeat=3)
    short = [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    variants = (list(switches) if args.grid == "full" else short) if gpu else short[:3]

    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"# training throughput on {where}, torch {torch.__version__}")
    print(f"# demo = {source} {dataclasses.asdict(demo)}")
    header = (
        f"{'config':<6} {'image':>5} {'batch':>5} {'params':>7} {'bf16':>5} {'chlast':>6} "
        f"{'compile':>7} {'samples/s':>10} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for label, config, batch in setups:
        # A paper-model step takes about a minute on two CPU cores: one warm-up, one timed.
        cpu_steps = 10 if label == "demo" else 1
        warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
        steps = args.steps if args.steps is not None else (20 if gpu else cpu_steps)
        params = count_parameters(build_model(config, VOCAB_SIZE, NUM_ANSWERS))["total"]
        baseline = None
        for bf16, channels_last, compile in variants:
            rate = measure(
                config,
                batch,
                device,
                bf16=bf16,
                channels_last=channels_last,
                compile=compile,
                warmup=warmup + (2 if compile else 0),  # compilation happens in the first steps
                steps=steps,
            )
            baseline = baseline or rate
            print(
                f"{label:<6} {config.image_size:>5} {batch:>5} {params / 1e6:>6.1f}M "
                f"{bf16!s:>5} {channels_last!s:>6} {compile!s:>7} {rate:>10.1f} "
                f"{rate / baseline:>5.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
