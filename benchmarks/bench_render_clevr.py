"""The CLEVR look against genuine CLEVR images: colour, background, camera, and a figure.

Every genuine train image of the development sample that has its scene record is re-rendered
from that record (`filmclevr.mini.render_clevr`: its camera fitted to the record's
`pixel_coords`) and compared (`filmclevr.mini.calibration`): per colour x material, the median
colour at object centres of the re-render beside the genuine image (CIELAB distance), the
background level in five horizontal bands, and the camera's reprojection error. Targets: mean
colour distance <= 8, none above 15; reprojection <= 0.5 px, read as the mean distance (rounded
`pixel_coords` are already up to 0.5 px off on each axis, and the fit adds its own error, so the
largest per axis is reported beside it). Prints each target met or not. Writes
`render_clevr.json` and `render_clevr.png` (genuine images above their re-renders) to --out.

    python benchmarks/bench_render_clevr.py [--genuine ../shared/clevr_genuine] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from filmclevr.distributed import cpu_machine
from filmclevr.evaluate import git_commit
from filmclevr.fileio import write_json_atomic
from filmclevr.mini import calibration

TARGETS = {"mean_delta_e": 8.0, "max_delta_e": 15.0, "reprojection_px": 0.5}
FIGURE_IMAGES = 6


def side_by_side(pairs: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    """Genuine images (top row) above their re-renders (bottom row), at half size."""
    w, h = 240, 160
    sheet = Image.new("RGB", (w * len(pairs), 2 * h + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (name, genuine, rendered) in enumerate(pairs):
        for row, pixels in enumerate((genuine, rendered)):
            tile = Image.fromarray(pixels).resize((w, h), Image.BILINEAR)
            sheet.paste(tile, (k * w, 16 + row * h))
        draw.text((k * w + 4, 2), name, fill="black")
    sheet.save(path)


def _met(value: float, target: str) -> str:
    return "met" if value <= TARGETS[target] else "NOT met"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--genuine", type=Path, default=Path("../shared/clevr_genuine"))
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    p.add_argument("--every", type=int, default=1, help="use every k-th genuine image")
    args = p.parse_args()
    pairs = calibration.load_genuine(args.genuine)[:: args.every]
    comparisons, figure = [], []
    started = time.process_time()
    for scene, path in pairs:
        genuine = np.asarray(Image.open(path).convert("RGB"))
        result = calibration.compare_images(scene, genuine)
        comparisons.append(result)
        if len(figure) < FIGURE_IMAGES:
            figure.append((path.stem, genuine, result.pop("rendered")))
        else:
            result.pop("rendered")
    seconds = time.process_time() - started
    summary = calibration.summarize(comparisons)
    errors = np.concatenate([c["per_axis"] for c in comparisons])
    summary["reprojection_px"]["max_per_axis"] = round(float(np.abs(errors).max()), 3)
    summary["images"] = len(pairs)
    summary["cpu_seconds_per_image"] = round(seconds / len(pairs), 3)  # fit, render, compare
    summary["machine"] = cpu_machine()
    summary["commit"] = git_commit()
    summary["genuine"] = str(args.genuine)

    print(f"{len(pairs)} genuine images from {args.genuine}\n")
    print(f"| {'colour material':18} | objects | genuine RGB | re-render RGB | delta E |")
    print(f"|{'-' * 20}|---------|-------------|---------------|---------|")
    for key, cell in summary["cells"].items():
        g = ",".join(f"{v:.0f}" for v in cell["genuine"])
        r = ",".join(f"{v:.0f}" for v in cell["rendered"])
        print(f"| {key:18} | {cell['objects']:7d} | {g:11} | {r:13} | {cell['delta_e']:7.2f} |")
    print(
        f"\ncolour distance: mean {summary['mean_delta_e']} (target <= {TARGETS['mean_delta_e']}:"
        f" {_met(summary['mean_delta_e'], 'mean_delta_e')}), max {summary['max_delta_e']}"
        f" (target <= {TARGETS['max_delta_e']}: {_met(summary['max_delta_e'], 'max_delta_e')})"
    )
    print("\nshading per material, each object's luminance (genuine / re-render, 0-255):")
    for material, cell in summary["shading"].items():
        stats = ", ".join(
            f"{stat} {cell[stat]['genuine']:.1f} / {cell[stat]['rendered']:.1f}"
            for stat in calibration.SHADING_STATS
        )
        print(f"  {material} ({cell['objects']} objects): {stats}")
    bands = ", ".join(f"{b['genuine']:.0f} / {b['rendered']:.0f}" for b in summary["background"])
    print(f"background level by band, top to bottom (genuine / re-render): {bands}")
    rep = summary["reprojection_px"]
    print(
        f"reprojection: mean {rep['mean']} px (target <= {TARGETS['reprojection_px']}: "
        f"{_met(rep['mean'], 'reprojection_px')}), max {rep['max']} px, max per axis "
        f"{rep['max_per_axis']} px"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "render_clevr.json", summary)
    side_by_side(figure, args.out / "render_clevr.png")
    print(f"\nwrote {args.out / 'render_clevr.json'} and {args.out / 'render_clevr.png'}")
    print(json.dumps({k: summary[k] for k in ("mean_delta_e", "max_delta_e")}))


if __name__ == "__main__":
    main()
