"""The stage runner turns expected failures into one log line and exit code 1."""

from __future__ import annotations

import logging

import pytest

from filmclevr.clevr import ClevrFormatError
from filmclevr.download import DownloadError, InsufficientSpaceError
from filmclevr.params import ParamsError
from stages import _common


@pytest.mark.parametrize(
    "error",
    [
        ParamsError("params.yaml: invalid parameters"),
        ClevrFormatError("q.json: not valid JSON"),
        ValueError("vocab.json: vocabulary not found"),
        FileNotFoundError(2, "No such file or directory", "data/x"),
        DownloadError("https://example.invalid/CLEVR.zip: HTTP 503 Service Unavailable"),
        InsufficientSpaceError("data/download: 3 GB free, 19 GB needed"),
        OSError(28, "No space left on device"),
        FloatingPointError("training diverged: the loss is nan at step 3"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_expected_errors_exit_1_with_one_line(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    def main() -> None:
        raise error

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        _common.run(main)
    assert exit_info.value.code == 1
    (record,) = [r for r in caplog.records if r.name == "stage"]
    assert record.getMessage() == str(error) and record.exc_info is None


def test_programming_errors_keep_their_traceback() -> None:
    def main() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        _common.run(main)


FLUSH_PROBE = """
import sys, threading
import torch
from stages import _common

def main():
    tiny = torch.tensor([1e-39])  # a float32 denormal
    seen = {"main": (tiny * 1.0).item()}
    # a thread started after the stage began, as torch's intra-op pool is
    worker = threading.Thread(target=lambda: seen.update(thread=(tiny * 1.0).item()))
    worker.start(); worker.join()
    print(seen["main"], seen["thread"])

from filmclevr.distributed import flush_denormals

_common.run(main, first=flush_denormals if sys.argv[1] == "models" else None)
"""


@pytest.mark.parametrize(("models", "flushed"), [(True, True), (False, False)])
def test_a_model_stage_treats_denormals_as_zero_in_its_threads(
    tmp_path, models: bool, flushed: bool
) -> None:
    """A model stage computes with denormal floats as zeros (on any thread it starts), where an
    x86 CPU would be many times slower; other stages leave the CPU's mode alone."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    root = Path(__file__).resolve().parents[1]

    if flushed and not torch.set_flush_denormal(False):  # the probe only: this CPU lacks it
        pytest.skip("this CPU cannot flush denormals")
    script = tmp_path / "probe.py"
    script.write_text(FLUSH_PROBE)
    out = subprocess.run(
        [sys.executable, str(script), "models" if models else "other"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    ).stdout.split()
    values = [float(v) for v in out]
    assert (values == [0.0, 0.0]) if flushed else all(v > 0 for v in values)
