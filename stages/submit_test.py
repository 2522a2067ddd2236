"""Stage submit_test: the test splits' predicted answers, to send to the dataset's authors.

CLEVR's test answers are private. Writes, per test split the shards hold (test; CoGenT's testA,
testB), `{split}_answers.txt` (one answer word per line, in question order: the format the
authors score) and `manifest.json` (each file's SHA-256, the checkpoint's SHA-256 and training
fingerprint, the data, the profile, the commit, how to submit). Data that contradicts
`get_data.source` is refused.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--checkpoint", type=Path, required=True, help="best-validation checkpoint")
    p.add_argument("--shards", type=Path, required=True, help="shard folder (with index.json)")
    p.add_argument("--tokens", type=Path, required=True, help="folder of encoded questions")
    p.add_argument("--out", type=Path, required=True, help="submission folder to write")
    args = p.parse_args()

    from filmclevr.params import load_params
    from filmclevr.submission import write_submission

    params = load_params(args.params)
    write_submission(
        args.checkpoint,
        args.shards,
        args.tokens,
        args.out,
        batch_size=params["evaluate_model"]["batch_size"],
        profile=params["profile"],
        source=params["get_data"]["source"],
    )


if __name__ == "__main__":
    from filmclevr.distributed import flush_denormals

    _common.run(main, first=flush_denormals)
