"""Stage 2 (resize_images): every split's images to `image_size` square RGB."""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--clevr", type=Path, required=True, help="CLEVR release root")
    p.add_argument("--out", type=Path, required=True, help="folder of resized images")
    p.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    args = p.parse_args()

    from filmclevr.params import load_params
    from filmclevr.resize import resize_images

    params = load_params(args.params)
    resize_images(
        args.clevr,
        args.out,
        splits=params["get_data"]["splits"],
        image_size=params["resize_images"]["image_size"],
        workers=_common.workers(args.workers),
    )


if __name__ == "__main__":
    _common.run(main)
