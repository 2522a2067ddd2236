"""CLEVR-CoGenT: the zero-shot rewrite, the FiLM arithmetic, fine-tuning sets, and the flow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from filmclevr import clevr, cogent, shards
from filmclevr.analysis import answer_with, film_parameters
from filmclevr.evaluate import predict
from filmclevr.model import build_model
from tests.helpers import (
    tiny_film_config,
    write_random_images,
    write_tokens_and_shards,
    write_vocab,
)

REFERENCE = {"cube": "brown", "cylinder": "red"}


def node(function: str, inputs: list[int], *values: str) -> dict:
    return {"function": function, "inputs": inputs, "value_inputs": list(values)}


def question(text: str, program: list[dict], index: int = 0) -> dict:
    return {"question": text, "program": program, "question_index": index}


def count_of(*filters: tuple[str, str]) -> list[dict]:
    """scene -> filter_<attr>[value] ... -> count."""
    program = [node("scene", [])]
    for attribute, value in filters:
        program.append(node(f"filter_{attribute}", [len(program) - 1], value))
    return [*program, node("count", [len(program) - 1])]


# --- Which questions the rewrite covers ---------------------------------------------------------
def test_rewrite_of_the_papers_example() -> None:
    q = question("How many cyan cubes are there?", count_of(("color", "cyan"), ("shape", "cube")))
    found = cogent.rewrite(q, REFERENCE)
    assert (found.color, found.shape, found.reference) == ("cyan", "cube", "brown")
    assert [" ".join(v) for v in found.variants()] == [
        "How many cyan spheres are there",
        "How many brown cubes are there",
        "How many brown spheres are there",
    ]


def test_rewrite_keeps_the_other_words_and_the_singular() -> None:
    program = [
        node("scene", []),
        node("filter_size", [0], "large"),
        node("filter_color", [1], "gray"),
        node("filter_material", [2], "metal"),
        node("filter_shape", [3], "cylinder"),
        node("unique", [4]),
        node("relate", [5], "left"),
        node("filter_color", [6], "purple"),  # another description, seen in A
        node("exist", [7]),
    ]
    text = "Is there a purple thing left of the large gray metallic cylinder?"
    found = cogent.rewrite(question(text, program), REFERENCE)
    assert [" ".join(v) for v in found.variants()] == [
        "Is there a purple thing left of the large gray metallic sphere",
        "Is there a purple thing left of the large red metallic cylinder",
        "Is there a purple thing left of the large red metallic sphere",
    ]
    # Synonyms and a capital: "Cyan blocks" -> "Cyan spheres" / "Brown blocks".
    q = question("Cyan blocks, how many are there?", count_of(("color", "cyan"), ("shape", "cube")))
    assert [v[:3] for v in cogent.rewrite(q, REFERENCE).variants()] == [
        ["Cyan", "spheres", ","],
        ["Brown", "blocks", ","],
        ["Brown", "spheres", ","],
    ]


@pytest.mark.parametrize(
    "text, program, why",
    [
        (
            "How many brown cubes are there?",
            count_of(("color", "brown"), ("shape", "cube")),
            "a combination condition A shows",
        ),
        (
            "How many cyan spheres are there?",
            count_of(("color", "cyan"), ("shape", "sphere")),
            "spheres take every colour",
        ),
        (
            "How many cyan things are there?",
            count_of(("color", "cyan")),
            "no shape: nothing unseen",
        ),
        (
            "Are there more cyan cubes than cyan things?",
            [
                *count_of(("color", "cyan"), ("shape", "cube"))[:-1],
                node("count", [2]),
                node("filter_color", [0], "cyan"),
                node("count", [4]),
                node("greater_than", [3, 5]),
            ],
            "the colour word twice",
        ),
        (
            "Are there more cyan cubes than gray cylinders?",
            [
                *count_of(("color", "cyan"), ("shape", "cube"))[:-1],
                node("count", [2]),
                node("filter_color", [0], "gray"),
                node("filter_shape", [4], "cylinder"),
                node("count", [5]),
                node("greater_than", [3, 6]),
            ],
            "two unseen descriptions",
        ),
        (
            "How many cyan cubes or cubes are there?",
            count_of(("color", "cyan"), ("shape", "cube")),
            "the shape word twice",
        ),
    ],
)
def test_rewrite_does_not_apply(text: str, program: list[dict], why: str) -> None:
    assert cogent.rewrite(question(text, program), REFERENCE) is None, why


def test_test_questions_without_a_program_are_not_rewritten() -> None:
    assert cogent.rewrite({"question": "How many cyan cubes?", "question_index": 0}, {}) is None


def test_a_reference_colour_unseen_in_a_is_refused() -> None:
    q = question("How many cyan cubes are there?", count_of(("color", "cyan"), ("shape", "cube")))
    with pytest.raises(ValueError, match="red cubes are not seen in A"):
        cogent.rewrite(q, {"cube": "red", "cylinder": "red"})


def test_object_descriptions_follow_filter_chains() -> None:
    program = [
        node("scene", []),
        node("filter_color", [0], "red"),
        node("filter_shape", [1], "cube"),
        node("unique", [2]),
        node("relate", [3], "behind"),
        node("filter_size", [4], "small"),
        node("filter_shape", [5], "sphere"),
        node("count", [6]),
    ]
    assert cogent.object_descriptions(program) == [
        {"color": "red", "shape": "cube"},
        {"size": "small", "shape": "sphere"},
    ]


# --- The arithmetic on a tiny model -------------------------------------------------------------
VOCAB_WORDS = ["How", "many", "cyan", "brown", "cubes", "spheres", "are", "there"]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_film_config(), vocab_size=4 + len(VOCAB_WORDS), num_answers=8).eval()


def test_combined_parameters_are_the_stated_sum(tiny_model) -> None:
    # Two questions of different lengths in one batch: padding must not leak into either.
    variants = [
        [[1, 4, 5, 6, 8, 2], [1, 4, 5, 7, 8, 2], [1, 4, 5, 7, 9, 2]],
        [[1, 6, 8, 10, 11, 5, 4, 2], [1, 7, 8, 10, 11, 5, 4, 2], [1, 7, 9, 10, 11, 5, 4, 2]],
    ]
    with torch.inference_mode():
        gammas, betas = cogent.combine(tiny_model, variants, torch.device("cpu"))
        for row, three in enumerate(variants):
            alone = [
                film_parameters(tiny_model, torch.tensor([t]), torch.tensor([len(t)]))
                for t in three
            ]
            expected_g = alone[0][0] + alone[1][0] - alone[2][0]
            expected_b = alone[0][1] + alone[1][1] - alone[2][1]
            torch.testing.assert_close(gammas[row], expected_g[0])
            torch.testing.assert_close(betas[row], expected_b[0])


def _batches(rng: np.random.Generator, n: int = 6) -> list[shards.Batch]:
    tokens = torch.tensor(rng.integers(4, 4 + len(VOCAB_WORDS), (n, 5)))
    tokens[:, 0], tokens[:, -1] = 1, 2
    return [
        shards.Batch(
            images=torch.tensor(rng.integers(0, 256, (n, 3, 32, 32)), dtype=torch.uint8),
            questions=tokens,
            lengths=torch.full((n,), 5),
            answers=torch.zeros(n, dtype=torch.long),
            types=torch.zeros(n, dtype=torch.long),
            question_indices=torch.arange(n),
        )
    ]


def test_zero_shot_answers_with_the_arithmetic_and_only_where_asked(tiny_model) -> None:
    batches = _batches(np.random.default_rng(0))
    cpu = torch.device("cpu")
    plain = predict(tiny_model, batches, cpu)
    assert cogent.zero_shot_predict(tiny_model, batches, {}, cpu) == plain
    batch = batches[0]
    own = batch.questions[2].tolist()
    # q + q - q is q: the same answer as without the arithmetic.
    assert cogent.zero_shot_predict(tiny_model, batches, {2: [own, own, own]}, cpu) == plain
    other = [batch.questions[k].tolist() for k in (3, 4, 5)]
    answers = cogent.zero_shot_predict(tiny_model, batches, {2: other}, cpu)
    assert {k: v for k, v in answers.items() if k != 2} == {
        k: v for k, v in plain.items() if k != 2
    }
    with torch.inference_mode():
        g, b = film_parameters(tiny_model, batch.questions[3:6], batch.lengths[3:6])
        logits = answer_with(
            tiny_model, batch.images[2:3], g[:1] + g[1:2] - g[2:3], b[:1] + b[1:2] - b[2:3]
        )[0]
    assert answers[2] == int(logits.argmax())


def test_encoding_the_variants_needs_every_word() -> None:
    q = question("How many cyan cubes are there?", count_of(("color", "cyan"), ("shape", "cube")))
    found = cogent.rewrite(q, REFERENCE)
    vocab = {"question_token_to_idx": {w: i + 4 for i, w in enumerate(VOCAB_WORDS)}}
    encoded = cogent.encode_variants(found, vocab)
    assert encoded[1] == [1, 4, 5, 7, 8, 10, 11, 2]  # How many brown cubes are there
    del vocab["question_token_to_idx"]["spheres"]
    assert cogent.encode_variants(found, vocab) is None


# --- Fine-tuning sets ---------------------------------------------------------------------------
def _records(per_image: list[int]) -> list[dict]:
    return [
        {"image_index": image, "question_index": 100 * image + k}
        for image, n in enumerate(per_image)
        for k in range(n)
    ]


def test_fine_tuning_sets_are_nested_prefixes_with_the_same_steps() -> None:
    records = _records([3, 4, 2, 5, 3, 3, 4])  # 24 questions over 7 images
    assert cogent.first_images_holding(records, 1) == 1
    assert cogent.first_images_holding(records, 7) == 2
    assert cogent.first_images_holding(records, 8) == 3
    small, large = (cogent.finetune_plan(records, [5, 14], n, 4) for n in (5, 14))
    assert (small.images, small.tune_questions) == (2, 7)
    assert (large.images, large.tune_questions, large.pool_images) == (4, 14, 4)
    assert small.pool_images == large.pool_images  # one held-out set for the whole curve
    assert large.epochs == 4 and small.epochs == 8  # 14 x 4 = 7 x 8 questions trained
    with pytest.raises(ValueError, match="none is left to test on"):
        cogent.finetune_plan(records, [24], 24, 1)
    with pytest.raises(ValueError, match="fewer than the 30 asked"):
        cogent.first_images_holding(records, 30)
    with pytest.raises(ValueError, match="not one of cogent.finetune_questions"):
        cogent.finetune_plan(records, [5], 6, 1)


def test_first_images_are_copied_into_their_own_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_vocab(tmp_path / "tokens", ["x"])
    questions = {"valB": []}
    for i, name, _ in write_random_images(tmp_path, "valB", 7, 8, rng):
        for _ in range(i % 3 + 1):
            questions["valB"].append(
                {
                    "question_index": len(questions["valB"]),
                    "image_index": i,
                    "image_filename": name,
                    "tokens": [1, 2],
                    "answer": 4,
                    "type": "exist",
                    "function": "exist",
                    "family": 0,
                }
            )
    write_tokens_and_shards(tmp_path, questions, images_per_shard=3)
    index = shards.write_first_images(tmp_path / "shards", "valB", 4, tmp_path / "tune")
    assert index["valB"]["images"] == 4 and len(index["valB"]["shards"]) == 2
    assert index["valB"]["questions"] == 1 + 2 + 3 + 1
    assert json.loads((tmp_path / "tune" / "index.json").read_text()) == index
    loader = shards.question_loader(
        shards.shard_paths(tmp_path / "tune", "valB"), batch_size=50, shuffle=False
    )
    seen = [q for batch in loader for q in batch.question_indices.tolist()]
    assert seen == [q["question_index"] for q in questions["valB"] if q["image_index"] < 4]
    with pytest.raises(ValueError, match="asked for its first 8 images, it has 7"):
        shards.write_first_images(tmp_path / "shards", "valB", 8, tmp_path / "x")


def test_transfer_split_must_be_cogents_b_split() -> None:
    params = {
        "get_data": {"splits": ["trainA", "valA", "valB", "testB"]},
        "cogent": {"finetune_questions": [10]},
    }
    cogent.check_transfer_split(params, "valB")
    for split, message in (("testB", "answered B split"), ("valA", "answered B split")):
        with pytest.raises(ValueError, match=message):
            cogent.check_transfer_split(params, split)
    with pytest.raises(ValueError, match="not one of get_data.splits"):
        cogent.check_transfer_split(params, "valC")
    assert clevr.cogent_condition("valB") == "B" and clevr.cogent_condition("val") is None


@pytest.mark.parametrize(
    ("sizes", "problem"),
    [([24], r"the largest .* none is left"), ([30], "the split holds 24 questions, fewer than")],
)
def test_fine_tuning_sizes_the_split_cannot_hold_name_the_file_and_the_parameter(
    tmp_path: Path, sizes: list[int], problem: str
) -> None:
    """Once "the split holds 64 questions, fewer than the 1000 asked for", naming neither."""
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    document = {"split": "valB", "questions": _records([3, 4, 2, 5, 3, 3, 4])}
    (tokens / "valB.json").write_text(json.dumps(document))
    params = {
        "get_data": {"splits": ["trainA", "valA", "valB"]},
        "train_model": {},
        "cogent": {"finetune_questions": sizes, "train_model": {"max_epochs": 1}},
    }
    message = rf"{tokens / 'valB.json'}: cogent\.finetune_questions: {problem}"
    with pytest.raises(ValueError, match=message):
        cogent.finetune(
            params, "valB", sizes[0], a_checkpoint=tmp_path / "a.pt", shards_dir=tmp_path,
            tokens_dir=tokens, out_dir=tmp_path / "out", last_checkpoint=tmp_path / "last.pt",
        )  # fmt: skip


def test_the_report_reads_each_size_s_own_fine_tuning_run(tmp_path: Path) -> None:
    """A stale or moved folder (32's run under 16/) put 32 twice on the sample-efficiency curve
    and 16 nowhere, with no word."""

    def put(folder: str, questions: int, pool_images: int = 8, split: str = "valB") -> None:
        (tmp_path / folder).mkdir(exist_ok=True)
        run = {"split": split, "questions": questions, "pool_images": pool_images}
        (tmp_path / folder / "result.json").write_text(json.dumps(run))

    put("16", 16)
    put("32", 32)
    runs = cogent.read_finetune_runs(tmp_path, "valB", [32, 16])
    assert [r["questions"] for r in runs] == [16, 32]
    put("16", 32)
    with pytest.raises(ValueError, match=r"16/result\.json: the run of 32 questions of 'valB', n"):
        cogent.read_finetune_runs(tmp_path, "valB", [16, 32])
    put("16", 16, split="valA")
    with pytest.raises(ValueError, match=r"16/result\.json: the run of 16 questions of 'valA'"):
        cogent.read_finetune_runs(tmp_path, "valB", [16, 32])
    put("16", 16, pool_images=4)
    with pytest.raises(ValueError, match=r"32/result\.json: held out the images after 8, the 16"):
        cogent.read_finetune_runs(tmp_path, "valB", [16, 32])
