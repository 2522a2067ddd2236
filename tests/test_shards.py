"""WebDataset shards: writer, index and the question loader (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from filmclevr import clevr
from filmclevr.shards import (
    TAR_MTIME,
    Batch,
    InMemorySplit,
    epoch_permutation,
    load_index,
    permuted_batch_bounds,
    permuted_steps_per_epoch,
    question_loader,
    shard_paths,
    transformed_batches,
    write_shards,
)

SIZE = 8
TYPES = list(clevr.QUESTION_TYPES)


def write_inputs(root: Path, split: str, images: int, *, seed: int = 0, answers: bool = True):
    """Resized images and a tokens file; image i has i % 4 questions (image 0 has none).

    Returns {question_index: (record, pixels [S, S, 3])}.
    """
    rng = np.random.default_rng(seed)
    (root / "resized" / split).mkdir(parents=True, exist_ok=True)
    expected, records = {}, []
    for image in range(images):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "resized" / split / clevr.image_filename(split, image))
        for _ in range(image % 4):
            index = len(records)
            kind = TYPES[index % len(TYPES)] if answers else None
            record = {
                "question_index": index,
                "image_index": image,
                "image_filename": clevr.image_filename(split, image),
                "tokens": [1] + rng.integers(4, 40, rng.integers(1, 9)).tolist() + [2],
                "answer": int(rng.integers(4, 32)) if answers else None,
                "type": kind,
                "function": clevr.QUESTION_TYPES[kind][0] if answers else None,
                "family": index % 90 if answers else None,
            }
            records.append(record)
            expected[index] = (record, pixels)
    records.reverse()  # the writer must not rely on the tokens file's order
    (root / "tokens").mkdir(exist_ok=True)
    document = {"split": split, "unknown_tokens": 0, "questions": records}
    (root / "tokens" / f"{split}.json").write_text(json.dumps(document))
    return expected


def write(root: Path, out: str = "shards", splits=("train",), per_shard: int = 3) -> dict:
    return write_shards(
        root / "resized",
        root / "tokens",
        root / out,
        splits=list(splits),
        images_per_shard=per_shard,
        progress=False,
    )


def flatten(batches) -> list[tuple]:
    """(question_index, tokens, answer, type, image) per question, in loader order."""
    rows = []
    for batch in batches:
        assert isinstance(batch, Batch)
        assert batch.images.dtype == torch.uint8 and batch.questions.dtype == torch.int64
        for i in range(len(batch.question_indices)):
            length = int(batch.lengths[i])
            assert batch.questions[i, length:].eq(0).all()  # <NULL> padding
            rows.append(
                (
                    int(batch.question_indices[i]),
                    batch.questions[i, :length].tolist(),
                    int(batch.answers[i]),
                    int(batch.types[i]),
                    batch.images[i].permute(1, 2, 0).numpy(),
                )
            )
    return rows


@pytest.fixture
def data(tmp_path):
    expected = write_inputs(tmp_path, "train", 14)
    index = write(tmp_path)
    return tmp_path, expected, index


def test_index_counts(data):
    root, expected, index = data
    assert load_index(root / "shards") == index
    train = index["train"]
    assert [s["file"] for s in train["shards"]] == [f"train/train-{n:06d}.tar" for n in range(5)]
    assert [s["images"] for s in train["shards"]] == [3, 3, 3, 3, 2]
    # image i holds i % 4 questions
    assert [s["questions"] for s in train["shards"]] == [3, 4, 5, 6, 1]
    assert (train["images"], train["questions"]) == (14, len(expected))
    for shard in train["shards"]:
        with tarfile.open(root / "shards" / shard["file"]) as tar:
            members = tar.getmembers()
        assert len(members) == 2 * shard["images"]
        assert all(m.mtime == TAR_MTIME and m.uid == 0 and m.uname == "" for m in members)


def test_round_trip_every_question_once(data):
    root, expected, _ = data
    paths = shard_paths(root / "shards", "train")
    rows = flatten(question_loader(paths, batch_size=4, shuffle=False))
    # Evaluation order: shard, image, then question index.
    order = sorted(expected, key=lambda q: (expected[q][0]["image_index"], q))
    assert [row[0] for row in rows] == order
    for index, tokens, answer, kind, image in rows:
        record, pixels = expected[index]
        assert tokens == record["tokens"]
        assert answer == record["answer"]
        assert kind == TYPES.index(record["type"])
        np.testing.assert_array_equal(image, pixels)


def test_test_split_has_unknown_answers(tmp_path):
    expected = write_inputs(tmp_path, "test", 6, answers=False)
    write(tmp_path, splits=["test"])
    rows = flatten(
        question_loader(shard_paths(tmp_path / "shards", "test"), batch_size=5, shuffle=False)
    )
    assert sorted(row[0] for row in rows) == sorted(expected)
    assert {(row[2], row[3]) for row in rows} == {(-1, -1)}


def test_rerun_is_byte_identical(data):
    root, _, index = data
    assert write(root, out="again") == index
    write(root)  # over the existing folder

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    first, again = files(root / "shards"), files(root / "again")
    assert sorted(map(str, first)) == ["index.json"] + [
        f"train/train-{n:06d}.tar" for n in range(5)
    ]
    assert first == again


def test_question_without_image_names_tokens_file(tmp_path):
    write_inputs(tmp_path, "val", 5)
    (tmp_path / "resized" / "val" / "CLEVR_val_000003.png").unlink()
    with pytest.raises(ValueError, match=r"val\.json.*CLEVR_val_000003\.png"):
        write(tmp_path, splits=["val"])
    assert not (tmp_path / "shards").exists()


def test_shuffle_is_deterministic_per_seed_and_epoch(data):
    root, expected, _ = data
    paths = shard_paths(root / "shards", "train")

    def order(**kw):
        loader = question_loader(paths, batch_size=5, shuffle=True, shuffle_buffer=7, **kw)
        return [row[0] for row in flatten(loader)]

    first = order(seed=3, epoch=1)
    # The shard order as it was before the official order was added beside it (recorded then):
    # resumed runs and every result trained so depend on it.
    assert first == [15, 16, 13, 14, 2, 18, 0, 6, 1, 17, 12, 3, 9, 7, 11, 5, 8, 4, 10]
    assert first == order(seed=3, epoch=1)
    assert sorted(first) == sorted(expected)
    assert first != sorted(first)
    assert order(seed=3, epoch=2) != first
    assert order(seed=4, epoch=1) != first


def fake_distributed(monkeypatch, rank: int, world_size: int) -> None:
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: rank)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: world_size)


@pytest.mark.parametrize("shuffle", [False, True])
def test_split_by_node_partitions_shards(data, monkeypatch, shuffle):
    root, expected, _ = data
    paths = shard_paths(root / "shards", "train")
    parts = []
    for rank in range(2):
        fake_distributed(monkeypatch, rank, 2)
        loader = question_loader(paths, batch_size=4, shuffle=shuffle, seed=1, epoch=5)
        parts.append({row[0] for row in flatten(loader)})
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert parts[0] | parts[1] == set(expected)
    # Whole images stay on one node: no image's questions are split between the two.
    images = [{expected[q][0]["image_index"] for q in part} for part in parts]
    assert not images[0] & images[1]
    # Without the split each rank sees everything.
    unsplit = question_loader(paths, batch_size=4, shuffle=shuffle, split_by_node=False)
    assert {row[0] for row in flatten(unsplit)} == set(expected)


def test_more_nodes_than_shards_is_an_error(data, monkeypatch):
    root, _, _ = data
    fake_distributed(monkeypatch, 0, 8)
    with pytest.raises(ValueError, match="5 shards cannot feed 8 nodes"):
        question_loader(shard_paths(root / "shards", "train"), batch_size=4, shuffle=False)


def test_workers_cover_every_question_once(data):
    root, expected, _ = data
    paths = shard_paths(root / "shards", "train")
    loader = question_loader(paths, batch_size=4, shuffle=False, num_workers=2)
    assert isinstance(loader, torch.utils.data.DataLoader)
    rows = flatten(loader)
    assert sorted(row[0] for row in rows) == sorted(expected)
    assert [row[0] for row in flatten(loader)] == [row[0] for row in rows]  # fixed order


def test_index_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="index.json"):
        load_index(tmp_path)
    write_inputs(tmp_path, "train", 3)
    write(tmp_path)
    with pytest.raises(ValueError, match=r"index\.json: no split 'val'"):
        shard_paths(tmp_path / "shards", "val")


# --- Damaged shards: each one checked against index.json ------------------------------------------
def read_split(root: Path, *, shuffle: bool = False, **kwargs) -> list[tuple]:
    paths = shard_paths(root / "shards", "train")
    return flatten(question_loader(paths, batch_size=4, shuffle=shuffle, **kwargs))


def members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


def rewrite_member(shard: Path, name: str, data: bytes) -> None:
    """`shard` again with member `name` holding `data` (sizes and headers made anew)."""
    with tarfile.open(shard) as tar:
        contents = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member_name, content in contents:
            info = tarfile.TarInfo(member_name)
            content = data if member_name == name else content
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


# Shard 1 holds images 3, 4 and 5, with 3, 0 and 1 questions.
SHARD = "train-000001.tar"
RECORDED = r"index\.json records 3 and 4: the shard is damaged or cut short"


@pytest.mark.parametrize("shuffle", [False, True])
def test_flipped_byte_in_a_tar_header_is_named(data, shuffle):
    root, _, _ = data
    shard = root / "shards" / "train" / SHARD
    header = members(shard)[2].offset  # image 4's json: a tar reader stops there, silently
    content = bytearray(shard.read_bytes())
    content[header + 3] ^= 0x01
    shard.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=rf"{SHARD}: holds 1 images and 3 questions, but .*"):
        read_split(root, shuffle=shuffle)
    with pytest.raises(ValueError, match=RECORDED):
        read_split(root, shuffle=shuffle)


def test_shard_cut_at_a_member_boundary_is_named(data):
    root, _, _ = data
    shard = root / "shards" / "train" / SHARD
    shard.write_bytes(shard.read_bytes()[: members(shard)[4].offset])  # a copy that stopped
    with pytest.raises(ValueError, match=rf"{SHARD}: holds 2 images and 3 questions, but"):
        read_split(root)
    with pytest.raises(ValueError, match=rf"{SHARD}: holds 2 images and 3 questions, but"):
        InMemorySplit.read(shard_paths(root / "shards", "train"), image_size=SIZE)


def test_shard_cut_inside_a_member_is_named(data):
    root, _, _ = data
    shard = root / "shards" / "train" / SHARD
    shard.write_bytes(shard.read_bytes()[: members(shard)[3].offset_data + 20])
    with pytest.raises(ValueError, match=rf"{SHARD}: not a readable tar file .*rerun write_shards"):
        read_split(root)


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "not a readable tar file"),
    (b"\0" * 10240, "holds 0 images and 0 questions"),  # a valid tar without members
    (None, "missing"),
])  # fmt: skip
def test_empty_or_missing_shard_is_named(data, content, problem):
    root, _, _ = data
    shard = root / "shards" / "train" / SHARD
    if content is None:
        shard.unlink()
    else:
        shard.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{SHARD}: {problem}"):
        read_split(root)


def test_damaged_shard_is_named_from_a_worker_process(data):
    root, _, _ = data
    shard = root / "shards" / "train" / SHARD
    shard.write_bytes(shard.read_bytes()[: members(shard)[4].offset])
    with pytest.raises(ValueError, match=rf"{SHARD}: holds 2 images"):
        read_split(root, num_workers=1)


def test_bad_json_member_is_named(data):
    root, _, _ = data
    rewrite_member(root / "shards" / "train" / SHARD, "CLEVR_train_000005.json", b"[{broken")
    with pytest.raises(ValueError, match=rf"{SHARD}: sample CLEVR_train_000005: .*not valid JSON"):
        read_split(root)


def test_image_of_the_wrong_size_is_named(data):
    root, _, _ = data
    small = io.BytesIO()
    Image.new("RGB", (SIZE - 1, SIZE - 1)).save(small, format="PNG")
    rewrite_member(root / "shards" / "train" / SHARD, "CLEVR_train_000004.png", small.getvalue())
    message = rf"{SHARD}: sample CLEVR_train_000004: a 7x7 image, expected 8x8"
    with pytest.raises(ValueError, match=message):
        read_split(root, image_size=SIZE)
    with pytest.raises(ValueError, match=message):  # the official order's reader checks alike
        InMemorySplit.read(shard_paths(root / "shards", "train"), image_size=SIZE)
    with pytest.raises(ValueError, match=message):  # the first image's size, by default
        read_split(root)


def test_image_of_another_mode_is_named(data):
    root, _, _ = data
    deep = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE), 40000, dtype=np.uint16)).save(deep, format="PNG")
    rewrite_member(root / "shards" / "train" / SHARD, "CLEVR_train_000004.png", deep.getvalue())
    with pytest.raises(ValueError, match=rf"{SHARD}: sample CLEVR_train_000004: a I;16 image"):
        read_split(root)


def test_answer_outside_the_vocabulary_is_named(data):
    root, expected, _ = data
    record = dict(expected[3][0], answer=32)  # question 3: image 3's first one
    records = [record] + [expected[q][0] for q in (4, 5)]
    text = json.dumps(records, sort_keys=True, separators=(",", ":")).encode()
    rewrite_member(root / "shards" / "train" / SHARD, "CLEVR_train_000003.json", text)
    assert len(read_split(root, num_answers=33)) == len(expected)
    message = rf"{SHARD}: sample CLEVR_train_000003: question 3 has answer index 32, outside"
    with pytest.raises(ValueError, match=rf"{message} the vocabulary's 32"):
        read_split(root, num_answers=32)


def test_token_outside_the_vocabulary_is_named(data):
    """Shards encoded with a larger vocabulary than the model's embedding."""
    root, expected, _ = data
    record = dict(expected[3][0], tokens=[1, 40, 2])  # question 3: image 3's first one
    records = [record] + [expected[q][0] for q in (4, 5)]
    text = json.dumps(records, sort_keys=True, separators=(",", ":")).encode()
    rewrite_member(root / "shards" / "train" / SHARD, "CLEVR_train_000003.json", text)
    assert len(read_split(root, vocab_size=41)) == len(expected)
    assert len(read_split(root)) == len(expected)  # unchecked without a vocabulary size
    message = rf"{SHARD}: sample CLEVR_train_000003: question 3 has token index 40, outside"
    with pytest.raises(ValueError, match=rf"{message} the vocabulary's 40"):
        read_split(root, vocab_size=40)
    paths = shard_paths(root / "shards", "train")
    with pytest.raises(ValueError, match=rf"{message} the vocabulary's 40"):
        InMemorySplit.read(paths, image_size=SIZE, vocab_size=40)  # the official order's reader


def test_nothing_of_a_damaged_shard_is_handed_on(data):
    root, _, _ = data
    shard = root / "shards" / "train" / SHARD
    shard.write_bytes(shard.read_bytes()[: members(shard)[4].offset])
    paths = [str(shard)]
    seen = []
    with pytest.raises(ValueError, match=SHARD):
        for batch in question_loader(paths, batch_size=1, shuffle=False):
            seen.append(batch)
    assert seen == []


def test_shard_not_in_its_index_is_refused(data, tmp_path):
    root, _, _ = data
    stray = tmp_path / "elsewhere" / "train" / SHARD
    stray.parent.mkdir(parents=True)
    stray.write_bytes((root / "shards" / "train" / SHARD).read_bytes())
    with pytest.raises(ValueError, match=rf"{SHARD}: no .*elsewhere/index\.json to check"):
        question_loader([str(stray)], batch_size=4, shuffle=False)
    (tmp_path / "elsewhere" / "index.json").write_text(
        json.dumps({"train": {"shards": [], "images": 0, "questions": 0}})
    )
    with pytest.raises(ValueError, match=rf"{SHARD}: not listed in .*elsewhere/index\.json"):
        question_loader([str(stray)], batch_size=4, shuffle=False)


@pytest.mark.parametrize("field", ["images", "questions"])
def test_index_whose_split_counts_disagree_with_its_shards(data, field):
    root, _, index = data
    index["train"][field] += 1
    (root / "shards" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"index\.json: split 'train' records .* {field}"):
        shard_paths(root / "shards", "train")


def test_question_whose_image_filename_and_image_index_disagree(tmp_path):
    """It would be joined to the image its file name names: the wrong one for its index."""
    write_inputs(tmp_path, "val", 5)
    path = tmp_path / "tokens" / "val.json"
    document = json.loads(path.read_text())
    moved = next(r for r in document["questions"] if r["image_index"] == 3)
    moved["image_filename"] = clevr.image_filename("val", 2)
    path.write_text(json.dumps(document))
    message = (rf"val\.json: question {moved['question_index']} has image_filename "
               r"'CLEVR_val_000002\.png' but image_index 3")  # fmt: skip
    with pytest.raises(ValueError, match=message):
        write(tmp_path, splits=["val"])
    assert not (tmp_path / "shards").exists()


# --- The official order: the split in memory, every question permuted each epoch ------------------
def official_epoch(split: InMemorySplit, **kw) -> list[Batch]:
    return list(split.epoch_batches(**{"batch_size": 4, "seed": 3, "epoch": 1, **kw}))


@pytest.fixture
def in_memory(data) -> InMemorySplit:
    root, _, _ = data
    return InMemorySplit.read(shard_paths(root / "shards", "train"), image_size=SIZE)


def test_in_memory_split_holds_every_question_with_its_image(data, in_memory):
    _, expected, index = data
    assert len(in_memory) == index["train"]["questions"] == 19
    assert in_memory.images.shape == (14, 3, SIZE, SIZE)
    rows = flatten([in_memory.batch(np.arange(len(in_memory)))])  # padding checked there
    assert sorted(row[0] for row in rows) == sorted(expected)
    for index_, tokens, answer, kind, image in rows:
        record, pixels = expected[index_]
        assert tokens == record["tokens"]
        assert (answer, kind) == (record["answer"], TYPES.index(record["type"]))
        np.testing.assert_array_equal(image, pixels)


def test_official_order_visits_every_question_once_and_keeps_the_partial_batch(data, in_memory):
    _, expected, _ = data
    batches = official_epoch(in_memory)
    assert [len(b.answers) for b in batches] == [4, 4, 4, 4, 3]  # 19 questions: 3 kept
    order = [row[0] for row in flatten(batches)]
    assert sorted(order) == sorted(expected)
    assert permuted_steps_per_epoch(19, 4, 1) == len(batches)
    # Every question of the split, not an image's questions together: a fresh permutation.
    assert order != sorted(order)
    # Each batch is padded to its own longest question, as the shard loader's.
    for batch in batches:
        assert int(batch.lengths.max()) == batch.questions.shape[1]


def test_official_order_is_the_seeds_and_differs_per_epoch(in_memory):
    def order(**kw):
        return [row[0] for row in flatten(official_epoch(in_memory, **kw))]

    first = order(seed=3, epoch=1)
    assert order(seed=3, epoch=1) == first
    assert order(seed=3, epoch=2) != first
    assert order(seed=4, epoch=1) != first
    assert sorted(order(seed=3, epoch=2)) == sorted(first)


@pytest.mark.parametrize("first_batch", [0, 1, 3, 4, 5])
def test_official_order_resumes_mid_epoch_with_the_remaining_batches(in_memory, first_batch):
    whole = official_epoch(in_memory)
    rest = official_epoch(in_memory, first_batch=first_batch)
    assert len(rest) == len(whole) - first_batch
    for a, b in zip(whole[first_batch:], rest, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_a_last_batch_of_one_question_joins_the_one_before():
    """BatchNorm cannot train on one question (the classifier's BatchNorm1d)."""
    assert permuted_batch_bounds(19, 6) == [(0, 6), (6, 12), (12, 19)]
    assert permuted_batch_bounds(19, 9) == [(0, 9), (9, 19)]
    assert permuted_batch_bounds(18, 6) == [(0, 6), (6, 12), (12, 18)]
    assert permuted_batch_bounds(20, 6) == [(0, 6), (6, 12), (12, 18), (18, 20)]
    assert permuted_batch_bounds(1, 6) == [(0, 1)]
    assert permuted_batch_bounds(3, 1) == [(0, 1), (1, 2), (2, 3)]  # batch_size 1: as asked


def test_official_order_over_ranks_is_a_distributed_sampler():
    """Each rank takes every world_size-th question of the one permutation, padded from its
    start so that every rank takes as many: together they cover the split."""
    world = 3
    parts = [epoch_permutation(19, seed=3, epoch=1, rank=r, world_size=world) for r in range(world)]
    assert [len(p) for p in parts] == [7, 7, 7]
    whole = epoch_permutation(19, seed=3, epoch=1)
    padded = np.concatenate([whole, whole[:2]])
    for rank, part in enumerate(parts):
        np.testing.assert_array_equal(part, padded[rank::world])
    assert set(np.concatenate(parts)) == set(range(19))
    assert permuted_steps_per_epoch(19, 4, world) == 2  # 7 per rank: 4 and 3


def test_official_order_batches_go_through_the_transform(in_memory):
    def blank(batch: Batch) -> Batch:
        return batch._replace(images=torch.zeros_like(batch.images))

    with transformed_batches(blank):
        batches = official_epoch(in_memory)
    assert all(int(b.images.max()) == 0 for b in batches)
    assert any(int(b.images.max()) > 0 for b in official_epoch(in_memory))
