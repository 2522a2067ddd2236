"""Stage 3: clevr-iep tokenization, `vocab.json` and the encoded questions of every split.

Compatible with clevr-iep's `iep/preprocess.py` and `scripts/preprocess_questions.py` (and the
FiLM fork's `vr/` copies), SPEC §5: the same tokens, the same vocabularies in the same order,
so indices match the official `vocab.json`. One deliberate difference: the answer vocabulary
is the 28 CLEVR answers (`clevr.ANSWERS`) rather than the answers seen in train. On CLEVR the
two are identical (train holds all 28), but a small mini-CLEVR train split may miss one, and
the model must keep its 32 outputs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from filmclevr import clevr, fileio

log = logging.getLogger(__name__)

# clevr-iep's special tokens, at the start of every vocabulary.
SPECIAL_TOKENS: dict[str, int] = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3}
START, END, UNK = (SPECIAL_TOKENS[t] for t in ("<START>", "<END>", "<UNK>"))
VOCAB_KEYS: tuple[str, ...] = (
    "question_token_to_idx",
    "program_token_to_idx",
    "answer_token_to_idx",
)


def tokenize(text: str) -> list[str]:
    """Split a question into clevr-iep tokens (no <START>/<END>).

    A space goes before ';' and ',' (they become tokens), '?' and '.' are deleted, and the text
    is split on single spaces, as `str.split(' ')` does in clevr-iep. Case is kept.
    """
    for punct in (";", ","):
        text = text.replace(punct, f" {punct}")
    for punct in ("?", "."):
        text = text.replace(punct, "")
    return text.split(" ")


def _sorted_vocab(tokens: Iterable[str]) -> dict[str, int]:
    """The specials, then the distinct tokens in sorted order (clevr-iep's `build_vocab`)."""
    vocab = dict(SPECIAL_TOKENS)
    for token in sorted(set(tokens) - set(SPECIAL_TOKENS)):
        vocab[token] = len(vocab)
    return vocab


def program_to_prefix(program: list[dict[str, Any]]) -> list[str]:
    """A program's tokens in prefix order, as clevr-iep's `list_to_prefix` + `list_to_str`.

    Each node is `function` or `function[value,...]`; the tree is read from the last node, a
    node before its inputs, inputs in order.
    """
    tokens: list[str] = []
    stack = [len(program) - 1]
    while stack:
        node = program[stack.pop()]
        values = node["value_inputs"]
        tokens.append(f"{node['function']}[{','.join(values)}]" if values else node["function"])
        stack.extend(reversed(node["inputs"]))
    return tokens


def build_vocab(questions: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Build clevr-iep's three vocabularies from (train) questions in release format.

    Returns:
        `{"question_token_to_idx", "program_token_to_idx", "answer_token_to_idx"}`, each
        `<NULL>`=0, `<START>`=1, `<END>`=2, `<UNK>`=3, then its tokens sorted. Answers are the
        28 CLEVR answers (32 entries), see the module docstring.
    """
    words: set[str] = set()
    functions: set[str] = set()
    for q in questions:
        words.update(tokenize(q["question"]))
        if "program" in q:
            functions.update(program_to_prefix(q["program"]))
    return {
        "question_token_to_idx": _sorted_vocab(words),
        "program_token_to_idx": _sorted_vocab(functions),
        "answer_token_to_idx": _sorted_vocab(clevr.ANSWERS),
    }


def _encode_question(
    q: dict[str, Any], vocab: dict[str, dict[str, int]], split: str, unknown: Counter[str]
) -> dict[str, Any]:
    """One question's record; its words outside the vocabulary are counted in `unknown`."""
    word_to_idx = vocab["question_token_to_idx"]
    answer_to_idx = vocab["answer_token_to_idx"]
    tokens = [START]
    for word in tokenize(q["question"]):
        index = word_to_idx.get(word)
        if index is None:
            unknown[word] += 1
            index = UNK
        tokens.append(index)
    tokens.append(END)
    answer = kind = function = None
    if "answer" in q:
        if q["answer"] not in answer_to_idx:
            raise clevr.ClevrFormatError(
                f"question {q['question_index']} of {split}: answer {q['answer']!r} is not "
                "in the answer vocabulary"
            )
        answer = answer_to_idx[q["answer"]]
    if "program" in q:
        if not q["program"]:
            raise clevr.ClevrFormatError(
                f"question {q['question_index']} of {split}: empty program"
            )
        function = q["program"][-1]["function"]
        try:
            kind = clevr.question_type(q["program"])
        except ValueError as e:
            raise clevr.ClevrFormatError(
                f"question {q['question_index']} of {split}: {e}"
            ) from None
    return {
        "question_index": q["question_index"],
        "image_index": q["image_index"],
        "image_filename": q["image_filename"],
        "tokens": tokens,
        "answer": answer,
        "type": kind,
        "function": function,
        "family": q.get("question_family_index"),
    }


def encode_split(
    questions: Iterable[dict[str, Any]], vocab: dict[str, dict[str, int]], split: str
) -> dict[str, Any]:
    """Encode one split's questions into the tokens-file format (docs/ARCHITECTURE.md).

    Words not in the vocabulary become `<UNK>` and are counted in `unknown_tokens`. `answer`,
    `type`, `function` and `family` are `None` where the split has no answers/programs (test).

    Raises:
        ClevrFormatError: an answer outside the answer vocabulary, or a program whose last
            function answers nothing.
    """
    unknown: Counter[str] = Counter()
    records = [_encode_question(q, vocab, split, unknown) for q in questions]
    return {"split": split, "unknown_tokens": sum(unknown.values()), "questions": records}


def write_encoded_split(
    questions: Iterable[dict[str, Any]], vocab: dict[str, dict[str, int]], split: str, path: Path
) -> tuple[int, int, Counter[str]]:
    """`encode_split`'s document, streamed to `path` record by record (the same bytes as
    `fileio.write_json_atomic(path, encode_split(...), indent=None)`).

    Returns:
        (questions, distinct images, unknown words with their counts).
    """
    unknown: Counter[str] = Counter()
    images: set[int] = set()
    count = 0
    tail = {"split": split, "unknown_tokens": 0}
    with fileio.json_list_writer(path, {}, "questions", tail) as append:
        for q in questions:
            record = _encode_question(q, vocab, split, unknown)
            images.add(record["image_index"])
            append(record)
            count += 1
        tail["unknown_tokens"] = sum(unknown.values())
    return count, len(images), unknown


def load_vocab(path: Path) -> dict[str, dict[str, int]]:
    """Read and validate a clevr-iep `vocab.json` (specials at 0..3, distinct indices).

    Raises:
        ValueError: the file is missing, not JSON, or not a valid vocabulary (names the file).
    """
    return check_vocab(fileio.read_json(path), path)


def check_vocab(vocab: Any, source: str | Path) -> dict[str, dict[str, int]]:
    """The three vocabularies of `vocab` (other keys dropped), validated as `load_vocab` does.

    Raises:
        ValueError: not a valid vocabulary; the message starts with `source`.
    """
    if not isinstance(vocab, dict):
        raise ValueError(f"{source}: expected a JSON object with keys {', '.join(VOCAB_KEYS)}")
    for key in VOCAB_KEYS:
        table = vocab.get(key)
        if not isinstance(table, dict) or not all(isinstance(i, int) for i in table.values()):
            raise ValueError(f"{source}: {key!r} missing or not a token -> index object")
        for token, index in SPECIAL_TOKENS.items():
            if table.get(token) != index:
                raise ValueError(
                    f"{source}: {key!r} has {token} at {table.get(token)}, expected {index}"
                )
        if sorted(table.values()) != list(range(len(table))):
            raise ValueError(f"{source}: {key!r} indices are not 0..{len(table) - 1}, each once")
    return {key: vocab[key] for key in VOCAB_KEYS}


def read_encoded_split(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """`iter_encoded_split` in a list."""
    return list(iter_encoded_split(path, split))


def iter_encoded_split(path: Path, split: str | None = None) -> Iterator[dict[str, Any]]:
    """The question records of an encoded split (`{split}.json`, written by `tokenize_questions`),
    one at a time: memory does not grow with the split.

    Raises:
        clevr.ClevrFormatError: the file is missing, not JSON, of another split (when `split` is
            given; checked before the first record), or a record lacks its question_index (names
            the file).
    """
    if split is not None:
        held = fileio.read_json_value(path, "split", None, clevr.ClevrFormatError)
        if held != split:
            raise clevr.ClevrFormatError(f"{path}: holds split {held!r}, expected {split!r}")
    return _checked_records(path)


def _checked_records(path: Path) -> Iterator[dict[str, Any]]:
    for position, record in enumerate(
        fileio.iter_json_list(path, "questions", clevr.ClevrFormatError)
    ):
        if not isinstance(record, dict) or "question_index" not in record:
            raise clevr.ClevrFormatError(f"{path}: question #{position} lacks question_index")
        yield record


def tokenize_questions(
    clevr_root: Path,
    out_dir: Path,
    *,
    splits: list[str],
    vocab_path: Path | None = None,
    train_split: str = "train",
) -> dict[str, Any]:
    """Write `vocab.json`, `{split}.json` and `report.json` to `out_dir` (SPEC §5).

    The vocabulary is built on the `train_split` questions only (whether or not `splits` lists
    it), or loaded from `vocab_path`, and reused for every split. The workflow passes the first
    entry of `get_data.splits` as `train_split` (CoGenT: trainA). `out_dir` is replaced
    atomically.

    Returns:
        The report: the dataset (`clevr.dataset_name` of the question files' own `info`),
        vocabulary sizes and, per split, question, image and unknown-token counts with the most
        frequent unknown words.

    Raises:
        ClevrFormatError: a question file is missing or malformed (names the file), or the
            splits' files come from different datasets.
        ValueError: `vocab_path` is not a valid vocabulary (names the file).
    """
    clevr_root, out_dir = Path(clevr_root), Path(out_dir)
    if vocab_path is not None:
        vocab = load_vocab(vocab_path)
        log.info("vocabulary loaded from %s", vocab_path)
    else:  # one pass over train for the vocabulary, another below to encode it
        vocab = build_vocab(
            clevr.iter_question_file(clevr.questions_path(clevr_root, train_split))[1]
        )
    report: dict[str, Any] = {
        "vocab": Path(vocab_path).as_posix()
        if vocab_path is not None
        else f"built on {train_split}",
        "vocab_sizes": {key: len(vocab[key]) for key in VOCAB_KEYS},
        "splits": {},
    }
    # One folder swap, so no file of an earlier run (another split, another vocab) survives.
    with fileio.atomic_dir(out_dir) as tmp:
        fileio.write_json_atomic(tmp / "vocab.json", vocab)
        for split in splits:
            path = clevr.questions_path(clevr_root, split)
            try:
                info, questions = clevr.iter_question_file(path)
                # Streamed: a split of 700,000 questions is read and written one at a time.
                count, images, unknown = write_encoded_split(
                    questions, vocab, split, tmp / f"{split}.json"
                )
            except clevr.ClevrFormatError as e:
                if str(e).startswith(str(path)):
                    raise
                raise clevr.ClevrFormatError(f"{path}: {e}") from None
            dataset = clevr.dataset_name(info, split)
            if report.setdefault("dataset", dataset) != dataset:
                raise clevr.ClevrFormatError(
                    f"{path}: its info says {dataset}, the splits before it {report['dataset']}; "
                    "one run's splits must come from one dataset"
                )
            n_unknown = sum(unknown.values())
            report["splits"][split] = {
                "questions": count,
                "images": images,
                "unknown_tokens": n_unknown,
                "unknown_words": dict(unknown.most_common(20)),
            }
            level = logging.WARNING if unknown else logging.INFO
            top = dict(unknown.most_common(5))
            log.log(level, "%s: %d questions, %d unknown tokens %s", split, count, n_unknown, top)
        fileio.write_json_atomic(tmp / "report.json", report)
    return report
