"""``invocations.jsonl``: what each call of an experiment trained, how long it took, and on what machine."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gn_plugin.training.run_dir import append_jsonl, read_jsonl

INVOCATIONS_FILE = "invocations.jsonl"


@dataclass
class Invocation:
    """What one ``gnbench bench`` call did: timings, counts and the machine, appended to ``invocations.jsonl``."""

    started_at: str
    elapsed_s: float
    jobs: int
    executed: int
    skipped: int
    failed: list[str]
    command: str
    machine: dict[str, Any]
    load: dict[str, float] | None  # system load average: 1-min before starting, 15-min when done
    stopped: str | None = None  # the signal that stopped it (SIGINT, SIGTERM); executed then counts the runs it finished


def record_invocation(root: Path, invocation: Invocation) -> None:
    """Append ``invocation`` to the output folder's record."""
    append_jsonl(root / INVOCATIONS_FILE, asdict(invocation))


def read_invocations(root: Path) -> list[dict[str, Any]]:
    """The recorded invocations that ran something, oldest first (a line torn by a kill is skipped)."""
    return read_jsonl(root / INVOCATIONS_FILE)[0]
