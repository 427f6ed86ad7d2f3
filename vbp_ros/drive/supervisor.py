"""The processes of a drive: started with their logs, watched, stopped in order (ROS-free)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass
class Child:
    """One process of the pipeline and its log file.

    Attributes:
        name: the node name, as exit codes and messages report it.
        command: the command line.
        log_path: where its standard output and error go.
        stop_timeout_s: how long :meth:`stop` waits after SIGINT before SIGKILL.
    """

    name: str
    command: list[str]
    log_path: Path
    stop_timeout_s: float = 15.0
    process: subprocess.Popen | None = None
    _log: IO | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start it in a session of its own: a terminal's Ctrl-C reaches the supervisor only,
        which stops the children in order."""
        self._log = self.log_path.open('w')
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def running(self) -> bool:
        """Whether it was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGINT, then SIGKILL after its timeout; the exit code (None: never started)."""
        if self.process is None:
            return None
        if self.running():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                print(f'{self.name} did not stop in {self.stop_timeout_s:.0f} s; killed',
                      file=sys.stderr)
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of its log."""
        return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])


def first_exited(children: list[Child]) -> Child | None:
    """The first started child that is no longer running, if any."""
    return next((child for child in children
                 if child.process is not None and not child.running()), None)


def executable(name: str) -> str:
    """An executable of this package: beside the running script (venv bin/ or colcon
    lib/vbp_ros/), beside the interpreter, or on PATH."""
    for folder in (Path(sys.argv[0]).resolve().parent, Path(sys.executable).parent):
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f'executable {name} not found; is vbp_ros installed?')
    return found
