"""The task a Slurm job of ``gnbench bench --launcher slurm`` runs: one cell's ``gnbench train`` as a child process.

submitit pickles a :class:`CellJob`, calls it when the job starts (again after each requeue) and calls
:meth:`CellJob.checkpoint` from its SIGUSR2 handler. Slurm's SIGUSR2 can come within seconds of a
job's start (a preemption, or a short time limit), and a process that has not yet installed a
handler dies of it, so this module imports nothing but the standard library: submitit pickles it by
value, and the job process is ready for the signal before torch would even have been imported. The
child starts with SIGUSR2 ignored until ``gnbench train`` installs its own handler.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
from typing import Any


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def write_json(path: str, record: dict[str, Any]) -> None:
    """``record`` as JSON at ``path``, replacing the old file atomically (a reader sees one or the other)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(record, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def read_json(path: str) -> dict[str, Any]:
    """The record at ``path`` (empty: no file, or an unreadable one)."""
    try:
        with open(path) as file:
            record = json.load(file)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def last_line(path: str) -> str:
    """The last non-empty line of a log file."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - 4096))
            lines = [line.strip() for line in file.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def stop_reason(log: str) -> str:
    """Why ``gnbench train`` stopped, from its last log line: the signal and the step its checkpoint holds."""
    line = last_line(log)
    found = re.search(r"stopped by (\w+) at step (\d+)", line)
    if found:
        return f"stopped by {found.group(1)}; its checkpoint at step {found.group(2)} is kept"
    found = re.search(r"stopped by (\w+) before the first step", line)
    return f"stopped by {found.group(1)} before its first step" if found else line


def job_id() -> str:
    """This job's id as Slurm lists it (``<array>_<index>`` for an array task)."""
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except (ImportError, RuntimeError, KeyError):
        return os.environ.get("SLURM_JOB_ID", "")


def ignore_usr2() -> None:
    """In the child before exec: SIGUSR2 ignored until ``gnbench train`` installs its handler."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class CellJob:
    """One cell of a benchmark as a submitit task, in plain strings (the paths and commands of the cell).

    ``new`` and ``resume`` are the cell's two ``gnbench train`` commands; which one runs is decided
    when the job starts: ``resume`` once ``checkpoint_path`` exists. ``state`` is the JSON file where
    the job keeps the cell's state for ``gnbench bench``.
    """

    def __init__(self, cell: str, new: list[str], resume: list[str], checkpoint_path: str, summary_path: str,
                 log: str, state: str, signal_delay_s: int) -> None:
        self.settings = {"cell": cell, "new": new, "resume": resume, "checkpoint_path": checkpoint_path,
                         "summary_path": summary_path, "log": log, "state": state, "signal_delay_s": signal_delay_s}
        self.cell, self.new, self.resume, self.log, self.state = cell, new, resume, log, state
        self.checkpoint_path, self.summary_path, self.signal_delay_s = checkpoint_path, summary_path, signal_delay_s
        self._child: subprocess.Popen | None = None
        self._exited = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.settings)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def record(self, state: str, **details: Any) -> None:
        write_json(self.state, {"state": state, "updated_at": now(), "job_id": job_id(), "host": socket.gethostname(),
                                **details})

    def __call__(self) -> str:
        gpus = {"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "started_at": now()}
        if os.path.isfile(self.summary_path):
            self.record("done", **gpus)
            return "done"
        environment = dict(os.environ)
        environment.setdefault("OMP_NUM_THREADS", environment.get("SLURM_CPUS_PER_TASK", "1"))
        environment.setdefault("MKL_NUM_THREADS", environment["OMP_NUM_THREADS"])
        command = self.resume if os.path.isfile(self.checkpoint_path) else self.new
        os.makedirs(os.path.dirname(os.path.abspath(self.log)), exist_ok=True)
        with open(self.log, "a") as log:
            log.write(f"# {now()} Slurm job {job_id()} on {socket.gethostname()}: {shlex.join(command)}\n")
            log.flush()
            self._child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                           preexec_fn=ignore_usr2)
        self.record("running", **gpus, pid=self._child.pid)
        # a thread reaps the child, so that checkpoint(), called from a signal handler while this
        # thread waits, never waits on the child itself
        threading.Thread(target=self._reap, daemon=True).start()
        while not self._exited.wait(1.0):
            pass
        code = self._child.returncode
        if code == 0:
            self.record("done", **gpus)
            return "done"
        if code in (128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM, -signal.SIGINT):  # scancel
            self.record("cancelled", **gpus, reason=stop_reason(self.log))
            return "cancelled"
        reason = f"exit {code}: {last_line(self.log)}"
        self.record("failed", **gpus, reason=reason, log=self.log)
        raise RuntimeError(f"cell {self.cell} failed ({reason}); its log is {self.log}")

    def _reap(self) -> None:
        self._child.wait()
        self._exited.set()

    def checkpoint(self) -> Any:
        """On Slurm's SIGUSR2: wait for the child to write its checkpoint and exit, then ask for the requeue.

        Slurm has signalled the child too; the signal is sent once more for schedulers that signal
        only this process (a repeated SIGUSR2 changes nothing for ``gnbench train``). A child that
        has not exited after 60 % of ``signal_delay_s`` (one still starting up, with SIGUSR2 ignored)
        gets SIGTERM, which it also answers with a checkpoint once it has a step; the job ends well
        before Slurm would kill it.
        """
        from submitit.helpers import DelayedSubmission

        child, delay = self._child, self.signal_delay_s
        for signum, wait_s in ((signal.SIGUSR2, min(delay - 20.0, 0.6 * delay)), (signal.SIGTERM, min(10.0, 0.2 * delay))):
            if child is None or self._exited.is_set():
                break
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                break
            self._exited.wait(max(1.0, wait_s))
        reason = stop_reason(self.log) if child is not None and self._exited.is_set() else "before its child started"
        self.record("requeued", reason=f"time limit or preemption; {reason}")
        return DelayedSubmission(CellJob(**self.__getstate__()))
