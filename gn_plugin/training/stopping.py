"""Stopping on SIGINT (Ctrl-C) or SIGTERM: the signal is recorded, and the code that runs decides when to stop."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gn_plugin.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """The first stop signal received (None: none yet) and how many have come."""

    signum: int | None = None
    count: int = 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "no signal"


@contextlib.contextmanager
def stop_signals(*, second_stops_at_once: bool) -> Iterator[StopRequest]:
    """For the block, SIGINT and SIGTERM are recorded in the :class:`StopRequest` it yields.

    With ``second_stops_at_once`` a second signal raises :class:`~gn_plugin.errors.Interrupted`
    where the code is (the user insists). Outside the main thread signals cannot be caught, and the
    request stays empty.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum: int, frame: Any) -> None:
        stop.count += 1
        if stop.signum is None:
            stop.signum = signum
        elif second_stops_at_once:
            raise Interrupted(f"stopped at once by a second {signal.Signals(signum).name}", signum)

    previous = {number: signal.signal(number, request) for number in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
