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
