"""What do FiLM layers learn? The paper's analysis (§4.2-4.3, SPEC §6) of a trained model.

The computations take tensors and return tensors or plain data, so tests run them on tiny
models with known weights; `analyze` runs them all on a split and writes `results/analysis/`:
every figure beside the CSV or JSON it is drawn from, and the headline numbers in one metrics
file (`metrics.json`, a DVC metric).

1. Where the classifier looks (Figure 4): for each channel of the classifier's
   1x1 conv -> BatchNorm -> ReLU output (before the global max pool) mark the location(s) of its
   maximum; count the marked channels per location; upsample bilinearly to the original image
   and overlay it. A second view: the mean activation of the last ResBlock's output.
2. gamma and beta over the split (Figures 5, 16, 17): histograms pooled and per ResBlock, and
   their range, fraction negative and fraction within +-0.1 of 0, beside the paper's.
3. t-SNE (Figure 6) of the (gamma, beta) vector of the first and the last ResBlock, coloured by
   the question's last program function (scikit-learn's TSNE, fixed seed).
4. Test-time ablations (Figure 7): accuracy with beta, or gamma, replaced by its training-set
   mean, and with Gaussian noise of growing standard deviation added to gamma or to beta.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from filmclevr import clevr
from filmclevr.model import FiLMedNet, unit_range

log = logging.getLogger(__name__)

PAPER_ANALYSIS = Path(__file__).resolve().parent / "paper" / "analysis.csv"
NEAR_ZERO = 0.1  # "within +-0.1 of 0": the sharp peak of the paper's gamma histogram


# --- Tracing one forward pass ---------------------------------------------------------------------
@dataclasses.dataclass
class Trace:
    """One forward pass, with what the analysis reads from inside it."""

    gammas: Tensor  # (B, blocks, C): the final gamma (1 + delta gamma for the paper's model)
    betas: Tensor  # (B, blocks, C)
    last_block: Tensor  # (B, C, H, W): the last ResBlock's output
    classifier_map: Tensor  # (B, P, H, W): 1x1 conv -> BN -> ReLU, before the global max pool
    logits: Tensor  # (B, answers)


def film_parameters(model: FiLMedNet, questions: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """The (gamma, beta) the question encoder gives every ResBlock, each (B, blocks, C)."""
    return model.film_generator(questions, lengths)


def answer_with(
    model: FiLMedNet, images: Tensor, gammas: Tensor, betas: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, last ResBlock output, classifier map) of `images` under the given FiLM parameters.

    The FiLM-ed network runs as the model's own forward does; hooks read the last block's output
    and the input of the classifier's global max pool (the 1x1 conv -> BN -> ReLU output).
    """
    seen: dict[str, Tensor] = {}
    net = model.filmed_net
    pool = next(m for m in net.classifier if isinstance(m, nn.AdaptiveMaxPool2d))
    hooks = [
        net.res_blocks[-1].register_forward_hook(lambda m, i, out: seen.update(block=out)),
        pool.register_forward_pre_hook(lambda m, i: seen.update(pre_pool=i[0])),
    ]
    try:
        logits = net(unit_range(images), gammas, betas)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, seen["block"], seen["pre_pool"]


def trace(model: FiLMedNet, images: Tensor, questions: Tensor, lengths: Tensor) -> Trace:
    """The model's forward pass on a batch, with its FiLM parameters and feature maps."""
    gammas, betas = film_parameters(model, questions, lengths)
    logits, block, pre_pool = answer_with(model, images, gammas, betas)
    return Trace(gammas, betas, block, pre_pool, logits)


# --- 1. Where the classifier looks ----------------------------------------------------------------
def max_location_counts(features: Tensor) -> Tensor:
    """(B, P, H, W) -> (B, H, W): per location, how many channels have their maximum there.

    Every location equal to a channel's maximum is marked (ties mark them all), as in the
    paper's Figure 4. A channel constant over the grid (a dead ReLU: all zero) has no location
    and marks none.
    """
    flat = features.flatten(2)  # (B, P, H*W)
    peak, low = flat.amax(dim=2, keepdim=True), flat.amin(dim=2, keepdim=True)
    marked = (flat == peak) & (peak > low)
    return marked.sum(dim=1).reshape(features.shape[0], *features.shape[2:]).float()


def upsample(grid: Tensor, height: int, width: int) -> np.ndarray:
    """A (h, w) map bilinearly upsampled to (height, width), min-max scaled to [0, 1]."""
    up = F.interpolate(grid[None, None].float(), size=(height, width), mode="bilinear")[0, 0]
    span = float(up.max() - up.min())
    return ((up - up.min()) / span if span > 0 else torch.zeros_like(up)).cpu().numpy()


def overlay(image: np.ndarray, grid: Tensor, floor: float = 0.15) -> np.ndarray:
    """The original RGB `image` (H, W, 3) uint8 lit by `grid` (h, w): the official debugging
    script's use of the upsampled map as alpha, over black (`floor` keeps the scene visible)."""
    alpha = upsample(grid, image.shape[0], image.shape[1])
    return (image.astype(np.float32) * (floor + (1 - floor) * alpha[..., None])).astype(np.uint8)


# --- 2. gamma and beta statistics ---------------------------------------------------------------
def film_statistics(values: Tensor) -> dict[str, float]:
    """Range, fraction negative and fraction within +-0.1 of 0 (in percent) of all `values`."""
    flat = values.detach().flatten().double()
    if flat.numel() == 0:
        raise ValueError("no FiLM parameters to summarize")
    return {
        "min": float(flat.min()),
        "max": float(flat.max()),
        "mean": float(flat.mean()),
        "std": float(flat.std()) if flat.numel() > 1 else 0.0,
        "negative_percent": 100.0 * float((flat < 0).double().mean()),
        "near_zero_percent": 100.0 * float((flat.abs() <= NEAR_ZERO).double().mean()),
    }


# --- 3. t-SNE -----------------------------------------------------------------------------------
def tsne_embedding(vectors: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of `vectors` (N, D) with scikit-learn, seeded (PCA init, automatic rate)."""
    from sklearn.manifold import TSNE

    if len(vectors) < 3:
        raise ValueError(f"t-SNE needs at least 3 questions, got {len(vectors)}")
    perplexity = min(30.0, (len(vectors) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(vectors.astype(np.float32))


# --- 4. Test-time ablations ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Ablation:
    """One way to change (gamma, beta) at test time."""

    name: str
    target: str  # "gamma", "beta" or "none"
    kind: str  # "none", "train_mean" or "noise"
    std: float = 0.0


def ablations(noise_levels: Iterable[float]) -> list[Ablation]:
    """The paper's Figure 7: none, each to its training-set mean, noise at each level on each."""
    runs = [Ablation("none", "none", "none")]
    runs += [Ablation(f"{t}_train_mean", t, "train_mean") for t in ("beta", "gamma")]
    for std in noise_levels:
        runs += [Ablation(f"{t}_noise_{std:g}", t, "noise", float(std)) for t in ("gamma", "beta")]
    return runs


def ablate(
    gammas: Tensor,
    betas: Tensor,
    ablation: Ablation,
    means: tuple[Tensor, Tensor],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """(gamma, beta) changed as `ablation` says; `means` are the training-set means (blocks, C)."""
    values = {"gamma": gammas, "beta": betas}
    if ablation.kind == "train_mean":
        mean = means[0] if ablation.target == "gamma" else means[1]
        values[ablation.target] = mean.to(gammas).expand_as(gammas)
    elif ablation.kind == "noise":
        target = values[ablation.target]
        noise = torch.randn(target.shape, generator=generator, device="cpu").to(target)
        values[ablation.target] = target + ablation.std * noise
    return values["gamma"], values["beta"]


# --- Choosing the Figure 4 examples -----------------------------------------------------------
def pick_examples(rows: list[dict[str, Any]], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """A fixed set of about `count` questions: for every question type a right and a wrong
    answer when there are both, then more of a seeded shuffle, in question order.

    Args:
        rows: one per question, with `question_index`, `type`, `correct`.
    """
    order = sorted(rows, key=lambda r: r["question_index"])
    random.Random(seed).shuffle(order)
    chosen: dict[int, dict[str, Any]] = {}
    for kind in clevr.QUESTION_TYPES:
        for correct in (True, False):
            match = next((r for r in order if r["type"] == kind and r["correct"] == correct), None)
            if match is not None and len(chosen) < count:
                chosen[match["question_index"]] = match
    for row in order:
        if len(chosen) >= count:
            break
        chosen.setdefault(row["question_index"], row)
    return sorted(chosen.values(), key=lambda r: r["question_index"])


def batches_on(loader: Iterable, device: torch.device) -> Iterator[tuple[Tensor, ...]]:
    """(images, questions, lengths, answers, question_indices) of each batch, on `device`."""
    for batch in loader:
        yield (
            batch.images.to(device),
            batch.questions.to(device),
            batch.lengths.to(device),
            batch.answers.to(device),
            batch.question_indices,
        )


def read_paper_analysis(path: Path = PAPER_ANALYSIS) -> dict[str, float]:
    """The paper's analysis numbers (quantity -> value), from its CSV."""
    import pandas as pd

    table = pd.read_csv(path)
    return dict(zip(table["quantity"], table["value"].astype(float), strict=True))


def paper_statistics(paper: Mapping[str, float], name: str) -> dict[str, float | None]:
    """The paper's `film_statistics` of gamma or beta where it states them (None elsewhere)."""
    return {
        "min": paper.get(f"{name}_min"),
        "max": paper.get(f"{name}_max"),
        "negative_percent": paper.get(f"{name}_negative_fraction"),
        "near_zero_percent": None,
    }


# --- The analyze_model stage -------------------------------------------------------------------
@dataclasses.dataclass
class _Pass:
    """What one pass over the split collected, per question, in question order of the loader."""

    question_indices: list[int] = dataclasses.field(default_factory=list)
    answers: list[int] = dataclasses.field(default_factory=list)
    predicted: list[int] = dataclasses.field(default_factory=list)
    probability: list[float] = dataclasses.field(default_factory=list)
    gammas: list[Tensor] = dataclasses.field(default_factory=list)
    betas: list[Tensor] = dataclasses.field(default_factory=list)
    location_maps: list[Tensor] = dataclasses.field(default_factory=list)
    mean_maps: list[Tensor] = dataclasses.field(default_factory=list)


def _limited(loader: Iterable, device: torch.device, limit: int | None) -> Iterator[tuple]:
    """The loader's batches on `device`, cut to `limit` questions in all (None: every one)."""
    seen = 0
    for images, questions, lengths, answers, indices in batches_on(loader, device):
        if limit is not None and seen >= limit:
            return
        keep = len(answers) if limit is None else min(len(answers), limit - seen)
        seen += keep
        yield images[:keep], questions[:keep], lengths[:keep], answers[:keep], indices[:keep]


def _first_pass(model: FiLMedNet, batches: Iterable[tuple]) -> _Pass:
    collected = _Pass()
    for images, questions, lengths, answers, indices in batches:
        t = trace(model, images, questions, lengths)
        probabilities = t.logits.float().softmax(dim=1)
        best = probabilities.max(dim=1)
        collected.question_indices += indices.tolist()
        collected.answers += answers.tolist()
        collected.predicted += best.indices.tolist()
        collected.probability += best.values.tolist()
        collected.gammas.append(t.gammas.float().cpu())
        collected.betas.append(t.betas.float().cpu())
        collected.location_maps.append(max_location_counts(t.classifier_map).cpu())
        collected.mean_maps.append(t.last_block.float().mean(dim=1).cpu())
    if not collected.question_indices:
        raise ValueError("the split yielded no questions to analyze")
    return collected


def train_means(model: FiLMedNet, batches: Iterable[tuple]) -> tuple[Tensor, Tensor]:
    """The training-set mean (blocks, C) of gamma and of beta."""
    total_gamma = total_beta = None
    count = 0
    for _, questions, lengths, _, _ in batches:
        gammas, betas = film_parameters(model, questions, lengths)
        g, b = gammas.double().sum(dim=0), betas.double().sum(dim=0)
        total_gamma = g if total_gamma is None else total_gamma + g
        total_beta = b if total_beta is None else total_beta + b
        count += len(questions)
    if not count:
        raise ValueError("the training split yielded no questions for the FiLM means")
    return (total_gamma / count).float(), (total_beta / count).float()


def ablation_accuracies(
    model: FiLMedNet,
    batches: Iterable[tuple],
    runs: list[Ablation],
    means: tuple[Tensor, Tensor],
    seed: int,
) -> dict[str, float]:
    """Accuracy (%) over the answered questions of `batches` under each ablation."""
    generators = {run.name: torch.Generator().manual_seed(seed + k) for k, run in enumerate(runs)}
    correct = dict.fromkeys(generators, 0)
    counted = 0
    for images, questions, lengths, answers, _ in batches:
        known = answers >= 0
        gammas, betas = film_parameters(model, questions, lengths)
        for run in runs:
            g, b = ablate(gammas, betas, run, means, generators[run.name])
            logits = answer_with(model, images, g, b)[0]
            correct[run.name] += int((logits.argmax(dim=1) == answers)[known].sum())
        counted += int(known.sum())
    if not counted:
        raise ValueError("no answered questions to score the ablations on")
    return {name: 100.0 * c / counted for name, c in correct.items()}


def analyze(
    checkpoint: Path,
    shards_dir: Path,
    tokens_dir: Path,
    clevr_root: Path,
    out_dir: Path,
    *,
    split: str,
    train_split: str,
    examples: int,
    max_questions: int | None,
    tsne_questions: int,
    noise_levels: list[float],
    batch_size: int,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Run the four analyses on `split` and write `out_dir` (replaced atomically).

    `max_questions` caps the questions of every computation but the examples (None: all of
    the split; the training-set means read as many training questions); `tsne_questions` caps
    those embedded. Returns the headline metrics (also `out_dir/metrics.json`).

    Raises:
        ValueError: tokens encoded with another vocabulary than the checkpoint's, shards not
            made for its model (image size, tokens, answers) or holding questions that the
            tokens file of `split` lacks; each names the file.
    """
    from filmclevr.checkpoint import check_tokens_vocab, model_from_checkpoint
    from filmclevr.distributed import resolve_device
    from filmclevr.evaluate import check_predicted_questions, checked_loader, read_tokens_report
    from filmclevr.fileio import atomic_dir, write_json_atomic
    from filmclevr.tokenize import read_encoded_split

    torch_device = resolve_device(device)
    model, state = model_from_checkpoint(checkpoint, torch_device)
    check_tokens_vocab(state, checkpoint, Path(tokens_dir) / "vocab.json")
    report = read_tokens_report(tokens_dir)

    def batches(name: str) -> Iterator[tuple]:
        loader = checked_loader(model, shards_dir, name, batch_size)
        return _limited(loader, torch_device, max_questions)

    runs = ablations(noise_levels)
    records_path = Path(tokens_dir) / f"{split}.json"
    records = {r["question_index"]: r for r in read_encoded_split(records_path)}
    with torch.inference_mode():
        seen = _first_pass(model, batches(split))
        predicted = dict(zip(seen.question_indices, seen.predicted, strict=True))
        check_predicted_questions(records.values(), predicted, records_path, shards_dir)
        means = train_means(model, batches(train_split))
        accuracy = ablation_accuracies(model, batches(split), runs, means, seed)
    rows = [
        {
            "question_index": q,
            "type": records[q]["type"],
            "function": records[q]["function"],
            "image_index": records[q]["image_index"],
            "correct": seen.predicted[k] == seen.answers[k],
            "position": k,
        }
        for k, q in enumerate(seen.question_indices)
    ]
    gammas, betas = torch.cat(seen.gammas), torch.cat(seen.betas)  # (N, blocks, C)
    paper = read_paper_analysis()
    label = f"{report['dataset']} / {split}, checkpoint epoch {state.get('epoch')}"
    with atomic_dir(out_dir) as tmp:
        words = {i: w for w, i in state["vocab"]["answer_token_to_idx"].items()}
        picked = pick_examples(rows, examples, seed)
        shown = _write_examples(tmp, picked, seen, words, clevr_root, split, label)
        statistics = _write_film(tmp, gammas, betas, paper, label)
        embedded = _write_tsne(tmp, rows, gammas, betas, tsne_questions, seed, label)
        _write_ablations(tmp, runs, accuracy, paper, label)
        base = accuracy["none"]
        metrics = {
            "context": {
                "dataset": report["dataset"],
                "split": split,
                "checkpoint_epoch": state.get("epoch"),
                "questions": len(rows),
                "questions_capped_at": max_questions,
                "tsne_questions": embedded,
                "examples": len(shown),
            },
            "accuracy": base,
            "beta_train_mean_drop": base - accuracy["beta_train_mean"],
            "gamma_train_mean_drop": base - accuracy["gamma_train_mean"],
            "paper": {
                "beta_train_mean_drop": paper.get("beta_to_train_mean_drop"),
                "gamma_train_mean_drop": paper.get("gamma_to_train_mean_drop"),
            },
            "gamma": statistics["gamma"]["ours"],
            "beta": statistics["beta"]["ours"],
        }
        write_json_atomic(tmp / "metrics.json", metrics)
    log.info(
        "%s: beta := its mean costs %.1f points, gamma := its mean %.1f (paper: %s and %s)",
        label,
        metrics["beta_train_mean_drop"],
        metrics["gamma_train_mean_drop"],
        paper.get("beta_to_train_mean_drop"),
        paper.get("gamma_to_train_mean_drop"),
    )
    return metrics


def _write_examples(
    out: Path,
    picked: list[dict[str, Any]],
    seen: _Pass,
    words: Mapping[int, str],
    clevr_root: Path,
    split: str,
    label: str,
) -> list[dict[str, Any]]:
    """Figure 4: a PNG per example, the grid, and the maps behind them (JSON, CSV)."""
    import pandas as pd

    from filmclevr.figures import plot_example_map, plot_example_maps
    from filmclevr.fileio import write_json_atomic
    from filmclevr.resize import open_image

    texts = {
        q["question_index"]: q
        for q in clevr.read_questions(clevr.questions_path(clevr_root, split))
    }
    location_maps, mean_maps = torch.cat(seen.location_maps), torch.cat(seen.mean_maps)
    shown = []
    for row in picked:
        k = row["position"]
        with open_image(clevr.image_path(clevr_root, split, row["image_index"])) as opened:
            image = np.asarray(opened.convert("RGB"))
        shown.append(
            {
                "question_index": row["question_index"],
                "image_filename": clevr.image_filename(split, row["image_index"]),
                "question": texts[row["question_index"]]["question"],
                "answer": words[seen.answers[k]],
                "predicted": words[seen.predicted[k]],
                "probability": seen.probability[k],
                "type": row["type"],
                "function": row["function"],
                "overlay": overlay(image, location_maps[k]),
                "mean_overlay": overlay(image, mean_maps[k]),
                "location_counts": location_maps[k].tolist(),
                "mean_activation": mean_maps[k].tolist(),
            }
        )
    for n, example in enumerate(shown):
        plot_example_map(example, out / f"example_{n:02d}_q{example['question_index']}.png")
    plot_example_maps(shown, out / "examples.png", label=label)
    data = [{k: v for k, v in e.items() if "overlay" not in k} for e in shown]
    write_json_atomic(out / "examples.json", data)  # the maps behind the figures
    grids = ("location_counts", "mean_activation")
    table = pd.DataFrame([{k: v for k, v in e.items() if k not in grids} for e in data])
    table.to_csv(out / "examples.csv", index=False)
    return shown


def _write_film(
    out: Path, gammas: Tensor, betas: Tensor, paper: Mapping[str, float], label: str
) -> dict[str, Any]:
    """Figures 5, 16, 17: the statistics beside the paper's, the histograms and their data."""
    from filmclevr.figures import plot_film_histograms
    from filmclevr.fileio import write_json_atomic

    statistics = {
        name: {
            "ours": film_statistics(values),
            "per_block": [film_statistics(values[:, b]) for b in range(values.shape[1])],
            "paper": paper_statistics(paper, name),
        }
        for name, values in (("gamma", gammas), ("beta", betas))
    }
    write_json_atomic(out / "film_statistics.json", statistics)
    _histogram_table(gammas, betas).to_csv(out / "film_histograms.csv", index=False)
    values = {"gamma": gammas.numpy(), "beta": betas.numpy()}
    plot_film_histograms(values, out / "film_histograms.png", label=label)
    return statistics


def _write_tsne(
    out: Path,
    rows: list[dict[str, Any]],
    gammas: Tensor,
    betas: Tensor,
    limit: int,
    seed: int,
    label: str,
) -> int:
    """Figure 6 for a seeded sample of `limit` questions; returns how many were embedded."""
    import pandas as pd

    from filmclevr.figures import plot_tsne

    picked = sorted(random.Random(seed).sample(range(len(rows)), min(limit, len(rows))))
    points = []
    for layer, block in (("first", 0), ("last", gammas.shape[1] - 1)):
        vectors = torch.cat([gammas[picked, block], betas[picked, block]], dim=1).numpy()
        for i, (x, y) in zip(picked, tsne_embedding(vectors, seed), strict=True):
            q, function = rows[i]["question_index"], rows[i]["function"]
            points.append({"layer": layer, "question_index": q, "function": function,
                           "x": float(x), "y": float(y)})  # fmt: skip
    table = pd.DataFrame(points)
    table.to_csv(out / "tsne.csv", index=False)
    plot_tsne(table, out / "tsne.png", label=label)
    return len(picked)


def _write_ablations(
    out: Path,
    runs: list[Ablation],
    accuracy: Mapping[str, float],
    paper: Mapping[str, float],
    label: str,
) -> None:
    """Figure 7: the accuracy of every ablation (CSV) and the plot beside the paper's drops."""
    import pandas as pd

    from filmclevr.figures import plot_ablations

    base = accuracy["none"]
    table = pd.DataFrame(
        [{"ablation": r.name, "target": r.target, "kind": r.kind, "std": r.std,
          "accuracy": accuracy[r.name], "drop": base - accuracy[r.name]} for r in runs]
    )  # fmt: skip
    table.to_csv(out / "ablations.csv", index=False)
    plot_ablations(table, paper, out / "ablations.png", label=label)


def _histogram_table(gammas: Tensor, betas: Tensor, bins: int = 100) -> Any:
    """Histogram counts of gamma and beta, pooled ("all") and per ResBlock: the figure's data."""
    import pandas as pd

    rows = []
    for name, values in (("gamma", gammas), ("beta", betas)):
        parts = [("all", values.flatten())]
        parts += [(str(b + 1), values[:, b].flatten()) for b in range(values.shape[1])]
        for block, flat in parts:
            counts, edges = np.histogram(flat.numpy(), bins=bins)
            rows += [
                {"parameter": name, "block": block, "left": float(edges[i]),
                 "right": float(edges[i + 1]), "count": int(counts[i])}
                for i in range(bins)
            ]  # fmt: skip
    return pd.DataFrame(rows)
