"""Named places where the fault tests stop a command with SIGKILL, as a power cut or `kill -9` would.

`kill_point("publish.copying")` does nothing unless the environment variable NEURON_ATLAS_KILL_AT names that point
("publish.copying", or "publish.copying#3" for its third passage in this process): then the process kills itself
on the spot, with no cleanup, no `finally` and no atexit. Outside the tests the cost is one dictionary lookup.
tests/test_kill.py lists the points and what a rerun must find after each.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

KILL_ENV = "NEURON_ATLAS_KILL_AT"
"""Environment variable naming the kill point (and optionally its passage, NAME#N) of this process."""

_passed: Counter[str] = Counter()
_lock = threading.Lock()


def kill_point(name: str) -> None:
    """SIGKILL this process here when $NEURON_ATLAS_KILL_AT names this point (and this is its N-th passage)."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    with _lock:
        _passed[name] += 1
        reached = _passed[name] >= int(nth or 1)
    if reached:
        os.kill(os.getpid(), signal.SIGKILL)
