"""CLEVR-Humans' data (paper Table 4; SPEC §6): its question files, the vocabulary expanded
as clevr-iep expands it, and the encoded questions and shards the fine-tuning reads.

CLEVR-Humans v1.0 (about 18K train, 7K val and 7K test questions) holds people's questions
about CLEVR's own images, one JSON file per split, each with `questions`: question, answer,
image_index, image_filename, split; there are no programs, so results are overall accuracies.
Its archive publishes no size or checksum: it is downloaded through the project's resumable
download (`download.fetch_archive`) with a warning that it cannot be verified, as CLEVR-CoGenT's,
and `extract_humans` takes its three files. On a CPU,
`filmclevr.mini.humans` writes a stand-in in the same format about a mini-CLEVR tree.

The vocabulary follows clevr-iep's `scripts/preprocess_questions.py` run as its
`preprocess_human.sh` runs it (`--expand_vocab 1 --unk_threshold 10 --encode_unk 1`): the words
of CLEVR-Humans train seen at least `unk_threshold` times and absent from CLEVR's vocabulary are
appended after it in sorted order (CLEVR's indices unchanged, so a CLEVR model reads its old
words as before); every other word of any split becomes <UNK>. Nothing is lower-cased. The
answer vocabulary stays CLEVR's: clevr-iep looks each answer up in the CLEVR vocabulary it
loaded and stops with a KeyError on one outside it, and so does `prepare` (naming the file, the
question and the answer), since the model's classifier has exactly CLEVR's answers.
"""

from __future__ import annotations

import logging
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filmclevr import clevr, fileio
from filmclevr.tokenize import VOCAB_KEYS, load_vocab, tokenize, write_encoded_split

log = logging.getLogger(__name__)

# CLEVR-Humans' splits; each asks about the images of CLEVR's split of the same name.
SPLITS = ("train", "val", "test")
DATASET = "CLEVR-Humans v1.0"
STAND_IN = "filmclevr CLEVR-Humans stand-in (re-worded mini-CLEVR questions, not human data)"
STAND_IN_DATASET = "CLEVR-Humans stand-in on mini-CLEVR (not human data)"


def question_file(root: str | Path, split: str) -> Path:
    """A CLEVR-Humans questions file under `root`, named as the release names it."""
    return Path(root) / f"CLEVR-Humans-{split}.json"


def dataset_name(info: Mapping[str, Any]) -> str:
    """What a CLEVR-Humans file is, from its own `info`: the stand-in says so; the release has
    no generator."""
    return STAND_IN_DATASET if info.get("generator") == STAND_IN else DATASET


# --- The release --------------------------------------------------------------------------------
def _member_name(split: str) -> re.Pattern[str]:
    # CLEVR-Humans-train.json; clevr-iep's instructions spell it CLEVR_humans_train.json.
    return re.compile(rf"CLEVR[-_]Humans[-_]{split}\.json", re.IGNORECASE)


def extract_humans(archive: str | Path, out_dir: str | Path) -> Path:
    """Write the three question files of a CLEVR-Humans archive (downloaded by
    `download.fetch_archive`) to `out_dir`, atomically, named `question_file`'s way, byte for
    byte as the archive holds them; each must read as answered questions.

    Raises:
        ClevrFormatError: the archive is not a zip, lacks a split's file or holds two, an
            entry is damaged, or a file is malformed (names the archive or the file).
    """
    archive = Path(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise clevr.ClevrFormatError(f"{archive}: not a readable zip archive ({e})") from None
    with zf, fileio.atomic_dir(out_dir) as tmp:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        for split in SPLITS:
            found = [n for n in names if _member_name(split).fullmatch(n.rsplit("/", 1)[-1])]
            if len(found) != 1:
                raise clevr.ClevrFormatError(
                    f"{archive}: expected one CLEVR-Humans-{split}.json, found "
                    f"{found or 'none'} among {names[:10]}; check humans.download.url"
                )
            try:
                with zf.open(found[0]) as src, open(question_file(tmp, split), "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            # A bad CRC or header, a damaged deflate stream, one cut short: a damaged
            # download, which nothing verifies where no checksum is published.
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                raise clevr.ClevrFormatError(
                    f"{archive}: entry {found[0]!r} is damaged ({e}); delete {archive} and run "
                    "again to download it anew"
                ) from None
        for split in SPLITS:  # each file must read as questions before the folder appears
            try:
                sum(1 for _ in read_split(tmp, split)[1])
            except clevr.ClevrFormatError as e:
                raise clevr.ClevrFormatError(f"{archive}: its {split} file: {e}") from None
    log.info("CLEVR-Humans from %s -> %s", archive, out_dir)
    return Path(out_dir)


def read_split(root: str | Path, split: str) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """(The file's info, its questions one at a time) as `clevr.iter_question_file` reads
    them (question_index: the position in the file, as clevr-iep's orig_idxs).

    The iterator raises ClevrFormatError, naming the file, at a question without an answer
    or of another split: every CLEVR-Humans split has its answers.
    """
    path = question_file(root, split)
    info, questions = clevr.iter_question_file(path, answered_keys=("answer",))
    return info, _checked(path, split, questions)


def _checked(path: Path, split: str, questions: Iterable[dict[str, Any]]) -> Iterator[dict]:
    for q in questions:
        if "answer" not in q:
            raise clevr.ClevrFormatError(f"{path}: question #{q['question_index']} has no answer")
        if q["split"] and q["split"] != split:
            raise clevr.ClevrFormatError(
                f"{path}: question #{q['question_index']} is of split {q['split']!r}, not {split!r}"
            )
        yield q


# --- The vocabulary -----------------------------------------------------------------------------
def expand_vocab(
    vocab: Mapping[str, Mapping[str, int]],
    questions: Iterable[Mapping[str, Any]],
    unk_threshold: int,
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """CLEVR's vocabulary with the words of `questions` seen at least `unk_threshold` times
    appended (clevr-iep's expand_vocab): in sorted order, after every index it has.

    Returns:
        (the expanded vocabulary, each added word -> its count).
    """
    if unk_threshold < 1:
        raise ValueError(f"unk_threshold must be at least 1, got {unk_threshold}")
    counts = Counter(word for q in questions for word in tokenize(q["question"]))
    words = dict(vocab["question_token_to_idx"])
    added = {}
    for word in sorted(counts):  # build_vocab's order, then appended as preprocess does
        if counts[word] >= unk_threshold and word not in words:
            words[word] = len(words)
            added[word] = counts[word]
    expanded = {key: dict(vocab[key]) for key in VOCAB_KEYS}
    expanded["question_token_to_idx"] = words
    return expanded, added


def prepare(
    humans_root: str | Path,
    clevr_vocab: str | Path,
    resized_root: str | Path,
    tokens_dir: str | Path,
    shards_dir: str | Path,
    *,
    unk_threshold: int,
    images_per_shard: int,
    progress: bool = True,
) -> dict[str, Any]:
    """The expanded vocabulary, the encoded splits and their shards.

    Writes `tokens_dir` (vocab.json, {split}.json in `tokenize_questions`' format, report.json:
    dataset, sizes, the added words, per split the questions, images and <UNK> tokens) and
    `shards_dir` (`shards.write_shards` of the images the questions ask about, read from
    `resized_root`, CLEVR's images resized), each replaced atomically.

    Raises:
        ClevrFormatError: a file is missing or malformed, or an answer is outside CLEVR's
            answer vocabulary (names the file and the question).
        ValueError: a question's image has no resized file (`shards.write_shards`).
    """
    from filmclevr import shards

    humans_root, tokens_dir = Path(humans_root), Path(tokens_dir)
    base = load_vocab(clevr_vocab)
    info, train = read_split(humans_root, SPLITS[0])
    vocab, added = expand_vocab(base, train, unk_threshold)
    log.info(
        "vocabulary: CLEVR's %d words + %d seen >= %d times in CLEVR-Humans train",
        len(base["question_token_to_idx"]),
        len(added),
        unk_threshold,
    )
    report: dict[str, Any] = {
        "dataset": dataset_name(info),
        "vocab": f"{clevr_vocab} with CLEVR-Humans train's words seen >= {unk_threshold} times",
        "unk_threshold": unk_threshold,
        "vocab_sizes": {key: len(vocab[key]) for key in VOCAB_KEYS},
        "clevr_words": len(base["question_token_to_idx"]),
        "added_words": added,
        "splits": {},
    }
    with fileio.atomic_dir(tokens_dir) as tmp:
        fileio.write_json_atomic(tmp / "vocab.json", vocab)
        for split in SPLITS:
            path = question_file(humans_root, split)
            try:
                questions = read_split(humans_root, split)[1]
                count, images, unknown = write_encoded_split(
                    questions, vocab, split, tmp / f"{split}.json"
                )
            except clevr.ClevrFormatError as e:
                if str(e).startswith(str(path)):
                    raise
                raise clevr.ClevrFormatError(f"{path}: {e}") from None
            report["splits"][split] = {
                "questions": count,
                "images": images,
                "unknown_tokens": sum(unknown.values()),
                "unknown_words": dict(unknown.most_common(20)),
            }
            log.info(
                "%s: %d questions about %d images, %d <UNK> tokens",
                split,
                count,
                images,
                sum(unknown.values()),
            )
        fileio.write_json_atomic(tmp / "report.json", report)
    shards.write_shards(
        resized_root,
        tokens_dir,
        shards_dir,
        splits=list(SPLITS),
        images_per_shard=images_per_shard,
        asked_only=True,
        progress=progress,
    )
    return report
