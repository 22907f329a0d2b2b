"""Fault points for kill tests: a named instant at which this process kills itself (SIGKILL), once.

Off unless ``LONGVID_FAULT`` names the point (``point:marker-file``, comma-separated for several);
the marker file is created with ``O_EXCL`` so each point fires once per test, even across the
retries it provokes. Production runs never set the variable; nothing else reads it.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "LONGVID_FAULT"


def fault_point(name: str) -> None:
    """Kill this process here if the test asked for it and it has not fired yet."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for entry in spec.split(","):
        point, _, marker = entry.partition(":")
        if point != name or not marker:
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
