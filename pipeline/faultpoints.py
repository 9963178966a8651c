"""Deterministic crash points for the kill tests: ``PIPELINE_TEST_KILL_AT=<point>:<n>``.

The code calls :func:`fault_point` at named places (a task starting or finishing, a progress step, the
middle of a staging or merge transaction). When the environment variable names that point, the process
sends itself SIGKILL on the point's ``n``-th hit (default 1): no ``finally``, no rollback, no flush, exactly
like ``kill -9`` or a machine losing power. Without the variable (production) a call costs one dict lookup.

Points (``<Family>`` is a task family, e.g. ``MergeDay``):

* ``run:<Family>``: the task holds its lock and is about to do its work;
* ``progress:<Family>``: each progress message of the task (e.g. each usage page landed);
* ``done:<Family>``: the task's work is written, before Luigi hears about it;
* ``stage:deleted``, ``stage:inserted``: inside a staging transaction;
* ``merge:deleted``, ``merge:populated``, ``merge:recomputed``, ``merge:validated``: inside the merge's
  transaction (the last one after the output checks, just before the commit).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV_VAR = "PIPELINE_TEST_KILL_AT"

_hits: Counter = Counter()


def parse(spec: str) -> tuple[str, int]:
    """``"merge:populated:2"`` -> ``("merge:populated", 2)``; without a count, the first hit."""
    point, _, count = spec.strip().rpartition(":")
    if point and count.isdigit():
        return point, int(count)
    return spec.strip(), 1


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if ``PIPELINE_TEST_KILL_AT`` names this point and hit count."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    point, count = parse(spec)
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == count:
        os.kill(os.getpid(), signal.SIGKILL)
