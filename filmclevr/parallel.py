"""A process-parallel `map` for the data stages: job order kept, memory flat, clean stops.

`multiprocessing.Pool` served here before. Its `terminate()`, which every stage reached (a
failed one too), kills workers with SIGTERM whatever locks of the pool's queues they hold. One CI
run stopped making progress at the test of a failing resize stage and ran out of time; the cause
was not reproduced (hundreds of runs here passed), so this module removes that suspect: leaving
it cancels the jobs not yet started and lets each worker finish the one it holds and exit.
Workers start the platform's default way (fork on Linux before Python 3.14, forkserver after),
so a script that calls a stage's function needs no `if __name__ == "__main__"` guard here.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

Job = TypeVar("Job")
Result = TypeVar("Result")


@contextlib.contextmanager
def ordered_map(
    fn: Callable[[Job], Result], jobs: Iterable[Job], workers: int, *, in_flight_per_worker: int = 8
) -> Iterator[Iterator[Result]]:
    """`map(fn, jobs)` over `workers` processes, as a context that yields the results' iterator.

    Results come in job order, and an error raised by `fn` is raised where its result would be.
    At most `workers * in_flight_per_worker` jobs are submitted ahead of the consumer, so memory
    does not grow with the number of jobs. Leaving the context (at the end, on an error, or after
    the caller stopped reading) cancels the jobs not yet started and waits for the workers to
    finish the ones they hold. `fn` must be a module-level function (it is pickled by name).
    With `workers == 1` the jobs run in this process, one at a time.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1:
        yield map(fn, jobs)
        return
    executor = ProcessPoolExecutor(workers)
    pending: collections.deque[Future] = collections.deque()
    remaining = iter(jobs)

    def results() -> Iterator[Result]:
        for job in itertools.islice(remaining, workers * in_flight_per_worker):
            pending.append(executor.submit(fn, job))
        while pending:
            result = pending.popleft().result()
            for job in itertools.islice(remaining, 1):  # one in, one out
                pending.append(executor.submit(fn, job))
            yield result

    try:
        yield results()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
