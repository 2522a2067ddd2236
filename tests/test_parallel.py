"""filmclevr.parallel.ordered_map: job order, errors as raised, early stops that start no more."""

from __future__ import annotations

from pathlib import Path

import pytest

from filmclevr.parallel import ordered_map


def square_and_mark(job: tuple[Path, int]) -> int:
    """Leaves a file per job run, so a test can count the jobs that started."""
    folder, n = job
    (folder / f"{n}.done").touch()
    if n == 3:
        raise KeyError(f"job {n} fails")
    return n * n


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_job_order(tmp_path: Path, workers: int) -> None:
    jobs = [(tmp_path, n) for n in range(4, 60)]
    with ordered_map(square_and_mark, jobs, workers, in_flight_per_worker=2) as results:
        assert list(results) == [n * n for n in range(4, 60)]
    assert len(list(tmp_path.glob("*.done"))) == 56


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_is_raised_as_raised_and_later_jobs_never_start(
    tmp_path: Path, workers: int
) -> None:
    jobs = [(tmp_path, n) for n in range(1000)]
    seen = []
    with pytest.raises(KeyError, match="job 3 fails"):
        with ordered_map(square_and_mark, jobs, workers, in_flight_per_worker=2) as results:
            seen.extend(results)
    assert seen == [0, 1, 4]
    # at most the jobs in flight when job 3's error came back had started; the context waited
    # for them, so the count no longer changes
    started = len(list(tmp_path.glob("*.done")))
    assert 4 <= started <= 4 + 2 * workers
    assert len(list(tmp_path.glob("*.done"))) == started


def test_a_caller_that_stops_reading_starts_no_more_jobs(tmp_path: Path) -> None:
    jobs = [(tmp_path, n) for n in range(4, 1000)]
    with ordered_map(square_and_mark, jobs, 2, in_flight_per_worker=2) as results:
        assert next(results) == 16
    assert len(list(tmp_path.glob("*.done"))) <= 1 + 4 + 1


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        with ordered_map(abs, [1], 0):
            pass
