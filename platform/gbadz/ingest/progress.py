"""Where an ingest run has got to, for whoever is watching (the CLI's progress bar).

The DAG's tasks run in this process under ``dag.test()``; each says when it has finished a
step and, once known, how many rows the file has. Nothing listens under a scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Land, validate, then publish or quarantine.
STEPS = 3
Listener = Callable[[str, "int | None"], None]
_listeners: list[Listener] = []


def finished(step: str, rows: int | None = None) -> None:
    """A step of the run is done (``rows``: the file's rows, when this step counted them)."""
    for listener in list(_listeners):
        listener(step, rows)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
