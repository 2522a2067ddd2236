"""Print the FiLM model's parameter count, per part and total, for any parameters file.

    python -m filmclevr.count_params --params config/paper.yaml --vocab data/tokens/vocab.json
    python -m filmclevr.count_params --params params.yaml --question-tokens 86 --answers 32

The question vocabulary size comes from a vocab.json (the tokenize stage writes one) or is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from filmclevr.params import ParamsError, load_params, model_overrides


def parameter_table(params_path: Path, question_tokens: int, answers: int) -> str:
    """The count per part as a small text table."""
    import torch

    from filmclevr.model import FiLMConfig, FiLMedNet, count_parameters

    config = FiLMConfig.from_dict(model_overrides(load_params(params_path)))
    with torch.device("meta"):  # shapes only: no memory for the 57M paper weights
        counts = count_parameters(FiLMedNet(config, question_tokens, answers))
    lines = [f"{params_path}: question vocabulary {question_tokens}, answers {answers}"]
    lines += [f"  {part:<12} {n:>12,}" for part, n in counts.items()]
    return "\n".join(lines)


def vocab_sizes(path: Path) -> tuple[int, int]:
    """(question tokens, answers) of a clevr-iep vocab.json; errors name the file."""
    from filmclevr.tokenize import load_vocab

    vocab = load_vocab(path)
    return len(vocab["question_token_to_idx"]), len(vocab["answer_token_to_idx"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file")
    p.add_argument("--vocab", type=Path, help="vocab.json giving the vocabulary sizes")
    p.add_argument("--question-tokens", type=int, help="question vocabulary size (no --vocab)")
    p.add_argument("--answers", type=int, default=32, help="answer slots (CLEVR: 32)")
    args = p.parse_args(argv)
    question_tokens, answers = args.question_tokens, args.answers
    try:
        if args.vocab is not None:
            question_tokens, answers = vocab_sizes(args.vocab)
        if question_tokens is None:
            p.error("give --vocab or --question-tokens")
        print(parameter_table(args.params, question_tokens, answers))
    except (OSError, ParamsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
