"""ShellTask: run a shell command as a task, as Prefect 1's `prefect.tasks.shell`.

    from orchestrator.tasks.shell import ShellTask

    shell = ShellTask(helper_script="cd /srv/reports", return_all=True,
                      stream_output="INFO")
    with Flow("reports") as flow:
        files = shell(command="ls *.csv")            # ["a.csv", "b.csv"]
        shell(command="gzip a.csv", upstream_tasks=[files])

The command (after `helper_script`, in the same script) runs with `shell`
(bash by default) and the task's environment plus `env`. Its stdout and stderr
are read together, line by line: the task returns the last line, or every
line with `return_all=True`, or None when there was no output. A non-zero exit
fails the task with "Command failed with exit code N" (its result is the
output, as on success); `log_stderr=True` logs the output then.
`stream_output=True` (or a level such as "DEBUG") logs each line as it comes.

A task that times out, or whose run is stopped, kills its shell instead of
leaving it running.
"""

import logging
import os
import selectors
import subprocess
import tempfile

from ..core import signals
from ..core.task import Task
from ..engine.run_logging import get_logger
from ..exceptions import TaskCallError
from .run_defaults import defaults_from_attrs

__all__ = ["ShellTask"]

# How long a read waits for output before handing control back to Python, so
# that a timeout (raised in this thread at its next instruction) is not held
# up by a command that prints nothing.
_READ_WAIT_SECONDS = 0.2


def _stream_level(stream_output):
    if stream_output is True:
        return logging.INFO
    if isinstance(stream_output, str):
        level = logging.getLevelName(stream_output.upper())
        if not isinstance(level, int):
            raise TypeError(
                f"ShellTask: stream_output={stream_output!r} is not a log level; pass "
                "True, a level name such as 'INFO' or 'DEBUG', or a number")
        return level
    return stream_output


class ShellTask(Task):
    """Runs `command` with `shell`; returns its last line of output (or all lines)."""

    def __init__(self, command=None, env=None, helper_script=None, shell="bash",
                 return_all=False, log_stderr=False, stream_output=False, **kwargs):
        self.command = command
        self.env = env
        self.helper_script = helper_script
        self.shell = shell
        self.return_all = return_all
        self.log_stderr = log_stderr
        self.stream_output = _stream_level(stream_output)
        super().__init__(**kwargs)

    @defaults_from_attrs("command", "env", "helper_script")
    def run(self, command=None, env=None, helper_script=None):
        if command is None:
            raise TaskCallError(
                f"ShellTask {self.name!r} has no command: pass command=... to ShellTask(...) "
                "or when calling it in the flow")
        if not isinstance(command, str):
            raise TaskCallError(f"ShellTask {self.name!r}: command={command!r} is not a "
                                "string; pass the command line as one string")
        logger = get_logger()
        run_env = dict(os.environ)
        run_env.update(env or {})
        with tempfile.NamedTemporaryFile(prefix="orchestrator-shell-", suffix=".sh") as script:
            if helper_script:
                script.write(helper_script.encode())
                script.write(os.linesep.encode())
            script.write(command.encode())
            script.flush()
            try:
                process = subprocess.Popen([self.shell, script.name], stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, env=run_env)
            except OSError as exc:
                raise TaskCallError(
                    f"ShellTask {self.name!r} cannot start the shell {self.shell!r}: "
                    f"{exc.strerror}; pass shell= the name or path of an installed shell "
                    "(e.g. 'bash' or '/bin/sh')") from None
            lines = []
            try:
                line = None
                for line in _output_lines(process):
                    if self.return_all:
                        lines.append(line)
                    if self.stream_output:
                        logger.log(self.stream_output, line)
                process.wait()
            except BaseException:
                # A timeout or a stop of the run: do not leave the command behind.
                process.kill()
                process.wait()
                raise
            finally:
                process.stdout.close()
        output = lines if self.return_all else line
        if process.returncode:
            message = f"Command failed with exit code {process.returncode}"
            logger.error(message)
            if self.log_stderr and not self.stream_output:
                logger.error("\n".join(lines) if self.return_all else line)
            raise signals.FAIL(message, result=output)
        return output


def _output_lines(process):
    """The process's output, line by line (without line endings), as it comes."""
    fd = process.stdout.fileno()
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if not selector.select(_READ_WAIT_SECONDS):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                yield raw.decode("utf-8", errors="replace").rstrip()
    if pending:
        yield pending.decode("utf-8", errors="replace").rstrip()
