"""The files of one run directory: config, checkpoints, samples and results, and the run's loggers.

One process writes a run directory at a time: :class:`RunLock` holds ``.lock`` (with the owner's
pid, host and Slurm job, and a heartbeat) for as long as it trains. The logs ``scalars.jsonl`` and ``results.jsonl`` are
append-only; a line torn by a kill or a full disk is skipped by readers and dropped on resume.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from torch import Tensor

from gn_plugin.atomic import write_atomically
from gn_plugin.config import Config
from gn_plugin.errors import GnPluginError
from gn_plugin.training.loggers import Loggers

LOCK_FILE = ".lock"
#: what a run writes into its directory
RUN_FILES = ("config.yaml", "log.txt", "scalars.jsonl", "results.jsonl", "summary.json", "checkpoints", "samples", "tensorboard")


#: how often the holder of a run lock refreshes its heartbeat (the lock file's mtime), in seconds
HEARTBEAT_S = 15.0
#: a lock named by another host counts as stale after this long without a heartbeat (network
#: file systems cache file times for up to a minute, and clocks of two hosts differ a little)
STALE_AFTER_S = 120.0


class RunLock:
    """An exclusive ``flock`` on ``path``, which names its owner (pid, host, Slurm job, start time).

    The kernel releases the lock when its owner dies, however it dies, so a lock file left by a
    killed process on this host is recognised as stale and taken over. Across hosts, where a network
    file system may not share ``flock`` at all, the holder refreshes the file's mtime every
    ``heartbeat_s`` seconds: a lock named by another host is taken over only once its heartbeat is
    older than ``stale_after_s``, or when it names this process's own Slurm job (a requeued job
    starts only after Slurm has ended its previous instance).
    """

    def __init__(self, path: Path, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S) -> None:
        self.path = path
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self._fd: int | None = None
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Take the lock; returns the owner a stale lock file named (None if there was none)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 4096).decode(errors="replace").strip() or "owner unknown"
                os.close(fd)
                raise GnPluginError(
                    f"{self.path.parent} is being written by another gnbench process ({owner}); "
                    "wait for it to finish or stop it"
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                # a file system without flock: the heartbeat alone tells a live owner from a gone one
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)  # the previous owner removed the file between our open and our lock: try again
        stale = os.read(fd, 4096).decode(errors="replace").strip() or None
        if stale is not None:
            silent_s = time.time() - os.fstat(fd).st_mtime
            if not self._may_take_over(stale, silent_s):
                os.close(fd)
                raise GnPluginError(
                    f"{self.path.parent} is being written by a gnbench process on another host ({stale}; "
                    f"last heartbeat {max(silent_s, 0):.0f} s ago, gone after {self.stale_after_s:.0f} s without one); "
                    "wait for it to finish or stop it"
                )
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        job = os.environ.get("SLURM_JOB_ID")
        os.ftruncate(fd, 0)
        owner = f"pid {os.getpid()} on host {socket.gethostname()}{f', Slurm job {job}' if job else ''}, since {started}\n"
        os.pwrite(fd, owner.encode(), 0)
        self._fd = fd
        self._stop_heartbeat.clear()
        self._heartbeat = threading.Thread(target=self._beat, args=(fd,), name="run-lock-heartbeat", daemon=True)
        self._heartbeat.start()
        return stale

    def _may_take_over(self, owner: str, silent_s: float) -> bool:
        """Whether the owner a lock file names is gone (we hold the flock, so on this host it is)."""
        host = re.search(r" on host (\S+?),", owner)
        if host is None or host.group(1) == socket.gethostname():
            return True
        job = re.search(r", Slurm job (\S+?),", owner)
        if job is not None and job.group(1) == os.environ.get("SLURM_JOB_ID"):
            return True
        return silent_s > self.stale_after_s

    def _beat(self, fd: int) -> None:
        while not self._stop_heartbeat.wait(self.heartbeat_s):
            try:
                os.utime(fd)
            except OSError:  # a full or vanished file system: the run itself will say so
                pass

    def release(self) -> None:
        if self._fd is not None:
            self._stop_heartbeat.set()
            if self._heartbeat is not None:
                self._heartbeat.join()
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a JSON-lines file and how many of its lines are unreadable (torn by a kill or a full disk)."""
    if not path.is_file():
        return [], 0
    records, unreadable = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            unreadable += 1
    return records, unreadable


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path``; a failed write (full or read-only disk) is a one-line error naming the file."""
    try:
        with open(path, "ab+") as file:
            if file.seek(0, os.SEEK_END) > 0:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":
                    text = "\n" + text  # a torn last line stays on its own line, where readers skip it
            file.write(text.encode())
    except OSError as exc:
        raise GnPluginError(f"cannot write {path}: {exc.strerror or exc}") from None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to a JSON-lines file as one line."""
    append_text(path, json.dumps(record) + "\n")


class RunFiles:
    """Paths and writers of a run directory; a non-writer (another process) writes nothing."""

    def __init__(self, root: Path, writer: bool = True) -> None:
        self.root = root
        self.writer = writer
        #: where scalars, sample grids and evaluations also go (``train.loggers``), once opened
        self.loggers: Loggers | None = None
        self._lock = RunLock(root / LOCK_FILE)

    config = property(lambda self: self.root / "config.yaml")
    checkpoints = property(lambda self: self.root / "checkpoints")
    latest_checkpoint = property(lambda self: self.checkpoints / "latest.pt")
    best_checkpoint = property(lambda self: self.checkpoints / "best.pt")
    results = property(lambda self: self.root / "results.jsonl")
    scalars = property(lambda self: self.root / "scalars.jsonl")
    summary = property(lambda self: self.root / "summary.json")
    samples = property(lambda self: self.root / "samples")

    # -- one writer ----------------------------------------------------------------------------
    def lock(self) -> str | None:
        """Create the directory if needed and take its lock; returns a stale owner's description, if any."""
        if self.root.exists() and not self.root.is_dir():
            raise GnPluginError(f"run directory {self.root} is a file, not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return self._lock.acquire()
        except OSError as exc:  # a read-only or full disk, no permission
            raise GnPluginError(f"cannot write to run directory {self.root}: {exc.strerror or exc}") from None

    def unlock(self) -> None:
        self._lock.release()

    def holds_run(self) -> bool:
        """Whether anything a run writes is in the directory."""
        return any((self.root / name).exists() for name in RUN_FILES)

    def remove_temporary_files(self) -> list[Path]:
        """Delete the temporary files of atomic writes a killed process left behind (run under the lock)."""
        folders = (self.root, self.checkpoints, self.samples)
        leftovers = [p for folder in folders for p in folder.glob(".*.tmp") if p.is_file()]
        for path in leftovers:
            path.unlink()
        return leftovers

    # -- writing -------------------------------------------------------------------------------
    def create(self) -> None:
        self.samples.mkdir(parents=True, exist_ok=True)

    def open_loggers(self, config: Config, resume_step: int | None) -> None:
        """Start the loggers ``config`` names (``train.loggers``); see :class:`~gn_plugin.training.loggers.Loggers`."""
        if self.writer:
            self.loggers = Loggers(config.train.loggers, self.root, config.to_dict(), resume_step=resume_step, report=self.log)

    def log(self, line: str) -> None:
        """Print a line and keep it in ``log.txt``."""
        if not self.writer:
            return
        print(line, flush=True)
        append_text(self.root / "log.txt", line + "\n")

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Scalars to TensorBoard and ``scalars.jsonl``."""
        if not self.writer:
            return
        if self.loggers:
            self.loggers.log_scalars(step, scalars)
        append_jsonl(self.scalars, {"step": step, **scalars})

    def add_image(self, step: int, grid: Tensor) -> None:
        """A sample grid (CHW in [0, 1]) to TensorBoard and ``samples/step_NNNNNNN.png``."""
        if not self.writer:
            return
        from torchvision.utils import save_image

        if self.loggers:
            self.loggers.log_image(step, "samples/raw_then_ema", grid)
        path = self.samples / f"step_{step:07d}.png"
        try:
            write_atomically(path, lambda file: save_image(grid, file, format="png"))
        except OSError as exc:
            raise GnPluginError(f"cannot write {path}: {exc.strerror or exc}") from None

    def append_result(self, record: dict[str, Any]) -> None:
        """One evaluation as a JSON line in ``results.jsonl`` and as TensorBoard scalars."""
        if not self.writer:
            return
        append_jsonl(self.results, record)
        if self.loggers:
            prefix = f"eval_{record['generator']}"
            self.loggers.log_scalars(record["step"], {
                f"{prefix}/{name}": value for name, value in record.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step"
            })

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.writer:
            text = json.dumps(summary, indent=2).encode()
            try:
                write_atomically(self.summary, lambda file: file.write(text))
            except OSError as exc:
                raise GnPluginError(f"cannot write {self.summary}: {exc.strerror or exc}") from None

    # -- reading -------------------------------------------------------------------------------
    def read_results(self) -> list[dict[str, Any]]:
        """All evaluation records so far (a torn line is skipped)."""
        return read_jsonl(self.results)[0]

    def read_scalars(self) -> list[dict[str, Any]]:
        """All logged scalars so far (a torn line is skipped)."""
        return read_jsonl(self.scalars)[0]

    def read_summary(self) -> dict[str, Any] | None:
        """The summary of a finished run, None for an unfinished one; an unreadable file is a one-line error."""
        if not self.summary.is_file():
            return None
        try:
            summary = json.loads(self.summary.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise GnPluginError(f"{self.summary}: unreadable ({exc}); delete it and resume the run to rewrite it") from None
        if not isinstance(summary, dict):
            raise GnPluginError(f"{self.summary}: not a run summary; delete it and resume the run to rewrite it")
        return summary

    def drop_after(self, step: int) -> list[str]:
        """Forget records of steps after ``step`` (a resumed run recomputes them) and torn lines; returns notes."""
        notes: list[str] = []
        if not self.writer:
            return notes
        for path in (self.results, self.scalars):
            records, unreadable = read_jsonl(path)
            if unreadable:
                notes.append(f"dropped {unreadable} unreadable line{'s' * (unreadable > 1)} of {path} (an interrupted write)")
            kept = [r for r in records if isinstance(r.get("step"), int) and r["step"] <= step]
            if path.exists() and (unreadable or len(kept) < len(records)):
                text = "".join(json.dumps(r) + "\n" for r in kept).encode()
                write_atomically(path, lambda file: file.write(text))
        return notes

    def close(self) -> None:
        if self.loggers is not None:
            self.loggers.close()
            self.loggers = None
