"""Which capacity lever lets FiLM compare two objects? The CLEVR-sized run learns every column
but Compare Attribute ("Is the cube the same color as the sphere?"), which stays at its prior
although it recognises each attribute (Query Attribute 87%). One budget of training questions,
one table: the profile's model, then one lever at a time towards the paper's model.

Trains on the profile's data (run the pipeline's data stages first, e.g. on the probe profile
whose questions are half Compare Attribute, half Query Attribute):

    snakemake write_shards --cores all --configfile config/probe-compare-attribute.yaml
    python -m studies.compare_attribute.capacity --params config/probe-compare-attribute.yaml

(`--only NAME ...` for some levers) and prints per lever the validation accuracy of Compare
Attribute after each epoch, its last Query Attribute accuracy, the parameters and the samples/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from filmclevr.count_params import vocab_sizes
from filmclevr.model import FiLMConfig, FiLMedNet
from filmclevr.params import load_params
from filmclevr.runs import model_fields
from filmclevr.scored_runs import train_and_score

REFERENCE = Path("results/reference/mini-clevr-size/film.pt")  # the CLEVR-sized run's model


@dataclass(frozen=True)
class Lever:
    """One row: FiLMConfig changes on top of the profile's model, train_model changes, and the
    checkpoint to start from (None: from scratch)."""

    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    init_checkpoint: Path | None = None


LEVERS: dict[str, Lever] = {
    "profile's model": Lever(),
    # needs the probe's data tokenized with the reference's vocab.json (the probe profile does)
    "the CLEVR-sized model, fine-tuned": Lever(
        train={"learning_rate": 5e-4}, init_checkpoint=REFERENCE
    ),
    "16x16 grid (2 stem layers; paper 14x14)": Lever(model={"stem_num_layers": 2}),
    "GRU 512 (paper 4096)": Lever(model={"rnn_hidden_dim": 512}),
    "ResBlocks 128 wide (paper)": Lever(model={"module_channels": 128}),
    # every width of FiLMConfig() (the paper's), at the profile's image size and grid
    "the paper's widths (GRU 4096, 128 maps)": Lever(
        model={
            "stem_channels": 128,
            "module_channels": 128,
            "word_embedding_dim": 200,
            "rnn_hidden_dim": 4096,
            "classifier_proj_dim": 512,
            "classifier_fc_dim": 1024,
        }
    ),
}


def slug(name: str) -> str:
    """A lever's name as a file name: "GRU 512 (paper 4096)" -> "gru-512-paper-4096"."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def parameter_count(model: dict, vocab_path: Path) -> int:
    net = FiLMedNet(FiLMConfig.from_dict(model), *vocab_sizes(vocab_path))
    return sum(p.numel() for p in net.parameters())


def table(runs: dict[str, dict], profile: str) -> str:
    """Compare Attribute after each epoch, last Query Attribute, parameters, speed, per lever."""
    prior = {  # a probe of one question type has no prior for the others
        column: float("nan") if value is None else value
        for column, value in next(iter(runs.values()))["prior"]["columns"].items()
    }
    epochs = max(len(r["history"]) for r in runs.values())
    header = " ".join(f"{'ep' + str(e + 1):>5}" for e in range(epochs))
    lines = [
        f"Compare Attribute, validation accuracy (%) of {profile} after each epoch "
        f"(prior {prior['compare_attribute']:.1f}; Query Attribute's prior "
        f"{prior['query_attribute']:.1f}):",
        f"{'lever':<40} {header} {'query':>5} {'params':>8} {'samples/s':>9}",
    ]
    for name, r in runs.items():
        cmp = " ".join(f"{100 * h['val_columns']['compare_attribute']:5.1f}" for h in r["history"])
        query = r["columns"]["query_attribute"]
        query = float("nan") if query is None else query
        lines.append(
            f"{name:<40} {cmp} {query:5.1f} {r['parameters']:8d} {r['samples_per_s']:9.0f}"
        )
    return "\n".join(lines)


def _key_value(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"--train {item!r}: expected KEY=VALUE")
    return key, yaml.safe_load(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--only", nargs="+", choices=list(LEVERS), help="run these levers only")
    p.add_argument("--json", type=Path, help="also write every run's metrics here")
    p.add_argument(
        "--data", type=Path, default=Path("data"), help="the profile's tokens/ and shards/"
    )
    p.add_argument(
        "--train",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="train_model changes for every lever, over the lever's own, e.g. max_epochs=12 "
        "bf16=true (YAML values)",
    )
    p.add_argument(
        "--init",
        type=Path,
        help="start every lever from this checkpoint (same model and vocabulary), e.g. a "
        "curriculum: the 2-object probe's models/film.pt, then this probe",
    )
    p.add_argument("--keep", type=Path, help="copy each lever's best checkpoint into this folder")
    p.add_argument(
        "--show", type=Path, nargs="+", help="print the table of these --json files, train nothing"
    )
    args = p.parse_args()
    # FILMCLEVR_LOG=INFO (as the stages take it) logs every epoch, kept if a run is killed
    logging.basicConfig(level=os.environ.get("FILMCLEVR_LOG", "WARNING"))
    params = load_params(args.params)
    if args.show:
        runs = {k: v for path in args.show for k, v in json.loads(path.read_text()).items()}
        print(table(runs, params["profile"]))
        return
    changes = dict(_key_value(item) for item in args.train)
    runs = {}
    for lever_name in args.only or LEVERS:
        lever = LEVERS[lever_name]
        name = lever_name if args.init is None else f"{lever_name}, from {args.init.name}"
        model = model_fields(params, lever.model)
        parameters = parameter_count(model, args.data / "tokens/vocab.json")  # fails fast
        train = {**lever.train, **changes}  # what the command line asks wins
        if (init := args.init or lever.init_checkpoint) is not None:
            train["init_checkpoint"] = str(init)
        run = train_and_score(
            params,
            data_dir=args.data,
            model=lever.model,
            train=train,
            keep_checkpoint=args.keep / f"{slug(lever_name)}.pt" if args.keep else None,
        )
        runs[name] = {**run, "parameters": parameters}
        print(f"{name}: {runs[name]['overall']:.2f}% ({runs[name]['seconds']:.0f} s)", flush=True)
        if args.json:  # after every run, so a long benchmark killed midway keeps what it measured
            args.json.write_text(json.dumps(runs, indent=1))
    print("\n" + table(runs, params["profile"]))


if __name__ == "__main__":
    main()
