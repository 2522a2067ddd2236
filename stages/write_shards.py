"""Stage 4 (write_shards): WebDataset tar shards per split and their index."""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--resized", type=Path, required=True, help="folder of resized images")
    p.add_argument("--tokens", type=Path, required=True, help="folder of encoded questions")
    p.add_argument("--out", type=Path, required=True, help="shard folder to write")
    args = p.parse_args()

    from filmclevr.params import load_params
    from filmclevr.shards import write_shards

    params = load_params(args.params)
    write_shards(
        args.resized,
        args.tokens,
        args.out,
        splits=params["get_data"]["splits"],
        images_per_shard=params["write_shards"]["images_per_shard"],
    )


if __name__ == "__main__":
    _common.run(main)
