"""CLEVR test submissions: the test splits' predicted answers, as a dataset's authors score them.

CLEVR's test answers are private (so are CoGenT's testA and testB): a result on test comes from
sending the dataset's authors a file of predicted answers, one answer word per line in question
order (`evaluate.write_test_answers`). `write_submission` (the submit_test stage) writes one such
file per test split the shards hold, and `manifest.json`: each file's SHA-256, the checkpoint's
SHA-256 and training fingerprint, the data (dataset, question and image counts, the shard
index's digest), the profile, the commit, and how to submit.

`score_submission` scores such a file as the authors would, against an answer key: a CLEVR
questions file with answers (a val file, or mini-CLEVR's hidden test answers, which
`python -m filmclevr.mini.answer_key` writes):

    python -m filmclevr.submission score results/submission/test_answers.txt KEY.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filmclevr import clevr
from filmclevr.evaluate import (
    check_source,
    checked_split_predictions,
    compute_metrics,
    git_commit,
    is_clevr,
    read_tokens_report,
    write_test_answers,
)
from filmclevr.fileio import atomic_dir, file_sha256, write_json_atomic
from filmclevr.tokenize import SPECIAL_TOKENS, read_encoded_split

log = logging.getLogger(__name__)

FORMAT = "filmclevr-submission/1"
MANIFEST = "manifest.json"
CLEVR_PAGE = "https://cs.stanford.edu/people/jcjohns/clevr/"
# The words of the answer vocabulary (vocab.json's answer_token_to_idx): CLEVR's 28 answers and
# the special tokens, which a barely trained model may predict; those answer no question, so
# they score as wrong, as `evaluate` scores them.
ANSWER_WORDS: frozenset[str] = frozenset((*SPECIAL_TOKENS, *clevr.ANSWERS))


def answers_file(split: str) -> str:
    """The name of a test split's answers file in a submission folder."""
    return f"{split}_answers.txt"


def how_to_submit(dataset: str, split: str) -> str:
    """What to do with a split's answers file: send it (CLEVR's data), or score it against the
    answers the mini-CLEVR generator holds."""
    file = answers_file(split)
    if is_clevr(dataset):
        return (
            f"{dataset}'s {split} answers are private: send {file} (one answer per line, in "
            f"question order) to the dataset's authors ({CLEVR_PAGE}), who score it; its "
            "sha256 here identifies the file sent"
        )
    return (
        f"{dataset}'s {split} answers are known to its generator alone: write them with "
        f"`python -m filmclevr.mini.answer_key --params <the profile's file> --clevr data/clevr "
        f"--split {split} --out KEY.json`, then `python -m filmclevr.submission score {file} "
        "KEY.json`"
    )


def write_submission(
    checkpoint: str | Path,
    shards_dir: str | Path,
    tokens_dir: str | Path,
    out_dir: str | Path,
    *,
    batch_size: int,
    profile: str,
    source: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Predict every test split the shards hold and write `out_dir` (replaced atomically):
    `{split}_answers.txt` per test split and `manifest.json`.

    A profile without test splits gets a manifest listing none (DVC runs every stage).

    Args:
        checkpoint: `models/film.pt`.
        shards_dir: holds `index.json` and the shards.
        tokens_dir: holds `report.json`, `vocab.json` (the checkpoint's) and `{split}.json`
            per split.
        batch_size: questions per forward pass.
        profile: the parameter profile's name, carried into the manifest.
        source: `get_data.source`; when given, data of the other kind is refused, as
            `evaluate.evaluate` refuses it.

    Returns:
        The manifest.
    """
    from filmclevr.checkpoint import check_tokens_vocab, model_from_checkpoint
    from filmclevr.distributed import resolve_device
    from filmclevr.shards import load_index

    checkpoint, shards_dir, tokens_dir = Path(checkpoint), Path(shards_dir), Path(tokens_dir)
    report = read_tokens_report(tokens_dir)
    if source is not None:
        check_source(report["dataset"], source, tokens_dir / "report.json")
    tests = [name for name in load_index(shards_dir) if clevr.is_test_split(name)]
    torch_device = resolve_device(device)
    model, state = model_from_checkpoint(checkpoint, torch_device)
    check_tokens_vocab(state, checkpoint, tokens_dir / "vocab.json")
    answer_vocab = state["vocab"]["answer_token_to_idx"]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "splits": {},
        "model": {
            "checkpoint": checkpoint.as_posix(),
            "sha256": file_sha256(checkpoint),
            "fingerprint": state.get("fingerprint"),  # its training run's, or its weights'
            "epoch": state.get("epoch"),
            "parameters": state["parameters"]["total"],
        },
        "data": {
            "dataset": report["dataset"],
            "shards_index": (shards_dir / "index.json").as_posix(),
            "shards_index_sha256": file_sha256(shards_dir / "index.json"),
        },
        "profile": profile,
        "commit": git_commit(),
    }
    if not tests:
        log.warning("%s: no test split, so no answers to submit", shards_dir / "index.json")
    # One folder swap, so the folder never mixes this run's files with an older run's.
    with atomic_dir(out_dir) as tmp:
        for split in tests:
            records_path = tokens_dir / f"{split}.json"
            records = read_encoded_split(records_path, split)
            predictions = checked_split_predictions(
                model,
                shards_dir,
                split,
                records,
                records_path,
                batch_size=batch_size,
                num_answers=len(answer_vocab),
                device=torch_device,
            )
            path = tmp / answers_file(split)
            write_test_answers(records, predictions, answer_vocab, path, records_path=records_path)
            special = sum(
                predictions[r["question_index"]] in SPECIAL_TOKENS.values() for r in records
            )
            if special:
                log.warning(
                    "%s: %d of %d predictions are special tokens, which answer nothing (a "
                    "barely trained model?)",
                    split,
                    special,
                    len(records),
                )
            counts = report["splits"].get(split, {})
            manifest["splits"][split] = {
                "file": answers_file(split),
                "sha256": file_sha256(path),
                "answers": len(records),
                "questions": counts.get("questions"),  # the tokenizer's report
                "images": counts.get("images"),
                "submit": how_to_submit(report["dataset"], split),
            }
            log.info("%s: %d answers -> %s", split, len(records), answers_file(split))
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


# --- Scoring a submission against an answer key --------------------------------------------------
def read_answer_key(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An answer key's `info` and its questions as `compute_metrics` records (question_index,
    answer word, type, function, family), in question order.

    Raises:
        ValueError: the file is no CLEVR questions file with answers, or its question indices
            are not 0..N-1 (line i of a submission answers question i).
    """
    path = Path(path)
    info, questions = clevr.iter_question_file(path)
    records = []
    for q in questions:
        if "answer" not in q:
            raise ValueError(
                f"{path}: question {q['question_index']} has no answer: not an answer key (a "
                "released test file? python -m filmclevr.mini.answer_key writes mini-CLEVR's)"
            )
        records.append(
            {
                "question_index": q["question_index"],
                "answer": q["answer"],
                "type": clevr.question_type(q["program"]),
                "function": q["program"][-1]["function"],
                "family": q["question_family_index"],
            }
        )
    records.sort(key=lambda r: r["question_index"])
    if [r["question_index"] for r in records] != list(range(len(records))):
        raise ValueError(
            f"{path}: question indices are not 0..{len(records) - 1}, so the lines of a "
            "submission cannot be matched to its questions"
        )
    return info, records


def read_submission(path: str | Path, questions: int) -> list[str]:
    """The answer words of a submission file: `questions` lines, each a word of the answer
    vocabulary (`ANSWER_WORDS`).

    Raises:
        ValueError: another number of lines, or a line that is no answer (names the file and
            the line).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    if len(lines) != questions:
        raise ValueError(
            f"{path}: {len(lines)} lines, but the answer key has {questions} questions (one "
            "answer per line, in question order)"
        )
    for number, line in enumerate(lines, start=1):
        if line not in ANSWER_WORDS:
            raise ValueError(
                f"{path}: line {number} is {line!r}, not a word of the answer vocabulary "
                f"(CLEVR's {len(clevr.ANSWERS)} answers and {', '.join(SPECIAL_TOKENS)})"
            )
    return lines


def score_submission(submission: str | Path, key: str | Path) -> dict[str, Any]:
    """Score a submission file against an answer key, as `evaluate` scores predictions:
    accuracy overall, per paper column, per terminal function and per family.

    Returns:
        `compute_metrics`' document with `correct`, and what was scored: the submission (path,
        sha256), the key (path, dataset, split).
    """
    info, records = read_answer_key(key)
    words = read_submission(submission, len(records))
    predictions = dict(enumerate(words))
    metrics = compute_metrics(records, predictions)
    split = info.get("split", "unknown")
    return {
        "submission": Path(submission).as_posix(),
        "sha256": file_sha256(submission),
        "key": Path(key).as_posix(),
        "dataset": clevr.dataset_name(info, split),
        "split": split,
        "correct": sum(words[r["question_index"]] == r["answer"] for r in records),
        **metrics,
    }


def _report(score: dict[str, Any]) -> str:
    lines = [
        f"{score['submission']} against {score['key']} ({score['dataset']} / {score['split']}): "
        f"overall {score['overall']:.2f}% ({score['correct']:,} of "
        f"{score['counts']['overall']:,} questions)"
    ]
    for column, accuracy in score["columns"].items():
        shown = "-" if accuracy is None else f"{accuracy:.2f}%"
        lines.append(f"  {column:<18} {shown:>8}  ({score['counts']['columns'][column]:,})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """python -m filmclevr.submission score SUBMISSION KEY [--json OUT]; the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m filmclevr.submission",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a submission file against an answer key")
    score.add_argument("submission", type=Path, help="answers file, one answer per line")
    score.add_argument("key", type=Path, help="CLEVR questions file with answers")
    score.add_argument("--json", type=Path, help="also write the scores here")
    args = p.parse_args(argv)
    try:
        result = score_submission(args.submission, args.key)
        if args.json is not None:
            write_json_atomic(args.json, result)
    except (OSError, ValueError) as e:  # ClevrFormatError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
