"""The celljepa logger and helpers to log a step's start, finish and outputs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


class _UnlessConfigured(logging.StreamHandler):
    """Print celljepa's messages to stderr unless the application has a logging setup of its own.

    The ``celljepa`` logger propagates, so a user's handlers (``logging.basicConfig``, a file handler on the root
    logger, pytest's ``caplog``) receive every record; this handler prints only while the root logger has none,
    so a message is never shown twice.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        super().emit(record)


logger = logging.getLogger("celljepa")
if not any(isinstance(h, _UnlessConfigured) for h in logger.handlers):
    _handler = _UnlessConfigured()
    _handler.setFormatter(logging.Formatter("celljepa: %(message)s"))
    logger.addHandler(_handler)
logger.propagate = True
logger.setLevel(logging.WARNING)

_logged_once: set[str] = set()


def log_once(key: str, message: str, level: int = logging.INFO) -> None:
    """Log ``message`` the first time ``key`` is seen in this process only."""
    if key in _logged_once:
        return
    _logged_once.add(key)
    logger.log(level, message)


@contextmanager
def log_step(name: str, written: Sequence[str] | None = None) -> Iterator[list[str]]:
    """Log the start and the end of a step with its elapsed time and what it wrote.

    The yielded list can be appended to while the step runs; its items are logged at the end.
    """
    outputs: list[str] = list(written or [])
    start = time.perf_counter()
    logger.info("%s: started", name)
    yield outputs
    elapsed = time.perf_counter() - start
    if outputs:
        logger.info("%s: finished in %.2fs; wrote %s", name, elapsed, ", ".join(outputs))
    else:
        logger.info("%s: finished in %.2fs", name, elapsed)
