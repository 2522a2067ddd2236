"""Stage 3 (tokenize_questions): clevr-iep vocabulary and encoded questions per split.

The vocabulary is built on the training split: the first of `get_data.splits`.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--clevr", type=Path, required=True, help="CLEVR release root")
    p.add_argument("--out", type=Path, required=True, help="folder for vocab.json and {split}.json")
    args = p.parse_args()

    from filmclevr.params import check_input_files, load_params
    from filmclevr.tokenize import tokenize_questions

    params = load_params(args.params)
    check_input_files(params, args.params)
    vocab = params["tokenize_questions"]["vocab"]
    splits = params["get_data"]["splits"]
    tokenize_questions(
        args.clevr,
        args.out,
        splits=splits,
        vocab_path=Path(vocab) if vocab else None,
        train_split=splits[0],
    )


if __name__ == "__main__":
    _common.run(main)
