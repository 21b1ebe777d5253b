"""Stopping on SIGINT (Ctrl-C), SIGTERM or SIGUSR2: the signal is recorded, and the code that runs decides when to stop.

SIGUSR2 is what a scheduler (Slurm through submitit) sends ahead of a time limit or a preemption;
SIGTERM is what ``kill`` and ``scancel`` send. All three mean "checkpoint, then exit".
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gn_plugin.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


@dataclass
class StopRequest:
    """The first stop signal received (None: none yet), how many have come, and which."""

    signum: int | None = None
    count: int = 0
    received: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "no signal"


@contextlib.contextmanager
def stop_signals(*, second_stops_at_once: bool) -> Iterator[StopRequest]:
    """For the block, SIGINT, SIGTERM and SIGUSR2 are recorded in the :class:`StopRequest` it yields.

    With ``second_stops_at_once`` a second SIGINT raises :class:`~gn_plugin.errors.Interrupted`
    where the code is (the user at the terminal insists). Any other repetition or mix (a scheduler
    that sends TERM and USR2 for one event, or sends a signal twice) only confirms the first request:
    the run still stops at its checkpoint. Outside the main thread signals cannot be caught, and the
    request stays empty.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum: int, frame: Any) -> None:
        repeated_interrupt = signum == signal.SIGINT and signal.SIGINT in stop.received
        stop.count += 1
        stop.received.append(signum)
        if stop.signum is None:
            stop.signum = signum
        elif second_stops_at_once and repeated_interrupt:
            raise Interrupted(f"stopped at once by a second {signal.Signals(signum).name}", signum)

    previous = {number: signal.signal(number, request) for number in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
