"""Stage 13 (prepare_humans): CLEVR-Humans' vocabulary, encoded questions and shards.

The vocabulary is CLEVR's (`--vocab`, the CLEVR model's) with the words of CLEVR-Humans train
seen at least `humans.unk_threshold` times appended, as clevr-iep expands it; rarer words are
<UNK>. `--tokens` gets vocab.json, {train,val,test}.json and report.json; `--shards` the shards
of the CLEVR images (`--resized`) the questions ask about.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--humans", type=Path, required=True, help="CLEVR-Humans question files")
    p.add_argument("--vocab", type=Path, required=True, help="CLEVR's vocab.json")
    p.add_argument("--resized", type=Path, required=True, help="resized CLEVR images")
    p.add_argument("--tokens", type=Path, required=True, help="folder of encoded questions")
    p.add_argument("--shards", type=Path, required=True, help="shard folder to write")
    args = p.parse_args()

    from filmclevr.humans_data import prepare
    from filmclevr.params import load_params

    params = load_params(args.params)
    prepare(
        args.humans,
        args.vocab,
        args.resized,
        args.tokens,
        args.shards,
        unk_threshold=params["humans"]["unk_threshold"],
        images_per_shard=params["write_shards"]["images_per_shard"],
    )


if __name__ == "__main__":
    _common.run(main)
