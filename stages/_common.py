"""What every stage entry point shares: logging set-up and a clean exit on bad input."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from filmclevr.clevr import ClevrFormatError
from filmclevr.params import ParamsError


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser that already takes `--params` (the one parameters file)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    return p


def workers(requested: int) -> int:
    """0 means every core this process may use (Snakemake passes its `threads`)."""
    return requested if requested > 0 else len(os.sched_getaffinity(0))


# Failures with a message that says it all: bad parameters or data (ValueError and its
# ParamsError, ClevrFormatError, checksum errors), the file system and the network (OSError:
# a missing file, no space, a failed download), and a diverged training run (train.py raises
# FloatingPointError on a non-finite loss).
EXPECTED_ERRORS = (ParamsError, ClevrFormatError, ValueError, OSError, FloatingPointError)


def run(main: Callable[[], None], *, first: Callable[[], object] | None = None) -> None:
    """Run a stage: log to stderr, turn expected errors into one line and exit code 1. `first`
    runs before anything else (a model stage's `distributed.flush_denormals`)."""
    if first is not None:
        first()
    logging.basicConfig(
        level=os.environ.get("FILMCLEVR_LOG", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        main()
    except EXPECTED_ERRORS as e:
        logging.getLogger("stage").error("%s", e)
        sys.exit(1)
