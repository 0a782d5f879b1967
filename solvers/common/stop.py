"""Stopping a long run cleanly on SIGTERM, the signal batch schedulers send before they kill a job (SLURM at its time
limit or on preemption, then SIGKILL after ``KillWait``, 30 s by default; ``#SBATCH --signal=TERM@120`` sends it
earlier).

The CLIs handle SIGTERM while they work (:func:`sigterm_handled`, in ``cli.run_main``, ``cli.tool_main`` and the
sweep). Inside a :func:`graceful` section (the solvers' frame loop, the training loop) the signal only sets a flag,
which the loop polls with :func:`requested` where it can stop: the solvers after the frame in progress, saving the
full state with it, training after the step in progress, with a checkpoint; either then raises :class:`Terminated`.
A resumed run continues from exactly there. Anywhere else the signal raises :class:`Terminated` at once, as Ctrl-C
raises KeyboardInterrupt, and what was committed before stays (every output is written whole or not at all).
The CLI then prints one line and exits with code 143 (128 + SIGTERM, the shell's convention).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

EXIT_TERMINATED = 143  # 128 + 15 (SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM ended the run. A KeyboardInterrupt, so that every path that keeps work on Ctrl-C keeps it here too.
    Its message says what a loop saved before it stopped; empty when the signal stopped the work at once."""


_requested = threading.Event()
_graceful_depth = 0


def _on_sigterm(signum, frame) -> None:
    _requested.set()
    if _graceful_depth == 0:
        raise Terminated()


@contextmanager
def sigterm_handled() -> Iterator[None]:
    """Handle SIGTERM as this module describes while the block runs, then restore the previous handler (a no-op
    outside the main thread, where Python cannot install signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def graceful() -> Iterator[None]:
    """A section whose loop polls :func:`requested` often: SIGTERM only sets the flag here."""
    global _graceful_depth
    _graceful_depth += 1
    try:
        yield
    finally:
        _graceful_depth -= 1


def pending() -> bool:
    """Whether SIGTERM has arrived in this process (no collective; a loop on several processes uses
    :func:`requested`, or broadcasts this itself along with its other decisions, as the solvers' driver does)."""
    return _requested.is_set()


def requested() -> bool:
    """Whether SIGTERM has arrived. On several processes (``jax.distributed``) process 0's answer, for all of them,
    so that every process stops at the same step: a collective call, which every process must make at the same
    point of its loop."""
    flag = pending()
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        flag = bool(multihost_utils.broadcast_one_to_all(np.bool_(flag)))
    return flag
