"""Worker processes forked from a zygote that has imported torch and transformers already.

An invocation must be a process of its own (`measure.worker`), but a fresh interpreter spends about half of a short
invocation importing torch, dynamo and transformers and tearing them down at exit (~9 s and ~3 s on this project's
2-core VM). Forked from a zygote that imported them once (`PRELOAD`; one zygote per process that runs the suite), a
one-thread invocation of tiny fp32 at batch 1 took 9.4 s against 17.7 s, at the same level and with no less spread
between invocations (docs/gate-quality.md, "Where the noise lives": 18 of each, alternating). Each fork is still a new
process: its own heap, model load, threads, warm-up and rounds; what it shares is the imported code and the address
layout.

Only plain invocations on the CPU are forked: CUDA cannot be used in a child forked after the parent initialized
it, which importing transformers may do, and `compare-stacks`' serving workers run another venv's Python, so
both of its sides start fresh interpreters alike (a paired comparison must not pair a fork with an exec).

Why not multiprocessing's fork server: its children import the caller's `__main__` again, so a script that
calls the library without an `if __name__ == "__main__"` guard would start runs recursively. The zygote here
runs nothing but `python -m <module> <argv>` in the child. Protocol, over a SOCK_SEQPACKET socket pair: a
request with the module, argv, environment and working directory, and the write end of the child's output pipe,
answers the child's pid; `wait` answers its exit code. The zygote ends when the socket closes (its parent ended).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import traceback
import warnings
from typing import IO, Any

# Imported once by the zygote: what every invocation would otherwise import again.
PRELOAD = (
    "perf_utils.measure.worker",
    "perf_utils.bark.loading",
    "perf_utils.bark.compat",
    "transformers.models.bark.modeling_bark",
    "accelerate",
)
_MAX_MESSAGE = 1 << 20
UNKNOWN_STATUS = -1  # a child whose zygote ended before it could say how the child ended


def available() -> bool:
    """Whether this platform can fork and pass descriptors over a socket (POSIX)."""
    return hasattr(os, "fork") and hasattr(socket, "send_fds")


class _Zygote:
    """The caller's end: one zygote per process, started on first use and again if it died."""

    _lock = threading.Lock()
    _current: _Zygote | None = None

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perf_utils.measure.forks", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.sock = mine

    @classmethod
    def get(cls) -> _Zygote:
        if cls._current is None or cls._current.proc.poll() is not None:
            cls._current = cls()
            atexit.register(cls._current.close)
        return cls._current

    def ask(self, request: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        with self._lock:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds or [])
            answer = self.sock.recv(_MAX_MESSAGE)
        if not answer:
            raise RuntimeError(f"the worker zygote ended (status {self.proc.wait()}); see its output above")
        return json.loads(answer)

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Forked:
    """A forked worker behind the part of `subprocess.Popen` that `measure.worker.Worker` uses: `stdout` (text,
    with stderr), `stdin` (None: a plain invocation reads nothing), `poll`, `wait`, `kill`."""

    stdin: IO[str] | None = None

    def __init__(self, argv: list[str], module: str = "perf_utils.measure.worker") -> None:
        read, write = os.pipe()
        try:
            self._zygote = _Zygote.get()
            request = {"module": module, "argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}
            self.pid: int = self._zygote.ask(request, [write])["pid"]
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)  # the child holds its own copy: end of output is the child's exit
        self.stdout: IO[str] = os.fdopen(read, "r", encoding="utf-8", errors="replace")
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            try:
                self.returncode = int(self._zygote.ask({"wait": self.pid})["code"])
            except (OSError, RuntimeError):  # the zygote ended first (Ctrl-C reaches it too): status unknown
                self.returncode = UNKNOWN_STATUS
            self.stdout.close()
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile: `wait` reads its status
                os.kill(self.pid, signal.SIGKILL)


# --- the zygote's end --------------------------------------------------------------------------------------


def _child(request: dict[str, Any], out: int) -> int:
    """In the forked process: the caller's environment and working directory, output to the caller's pipe, then
    `python -m <module> <argv>` as a fresh interpreter would run it."""
    os.environ.clear()
    os.environ.update(request["env"])  # read after import (the checkpoint cache, ...): the caller's, not ours
    os.chdir(request["cwd"])
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    sys.argv = [request["module"], *request["argv"]]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    return 0


def _serve(sock: socket.socket) -> None:
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 1)
        except (OSError, KeyboardInterrupt):  # Ctrl-C reaches the whole process group; the caller decides
            return
        if not data:
            return  # the caller ended
        request = json.loads(data)
        if "wait" in request:
            _, status = os.waitpid(request["wait"], 0)
            sock.send(json.dumps({"code": os.waitstatus_to_exitcode(status)}).encode())
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sock.close()
                code = _child(request, fds[0])
            except BaseException:  # noqa: BLE001 - reported on the pipe, like a fresh interpreter's traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)  # no teardown: seconds with torch and transformers loaded; the result is written
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"pid": pid}).encode())


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    # torch keeps a few idle native threads after import; the children start their own pools (DataLoader forks
    # the same way), so Python 3.12's warning about forking a threaded process says nothing new here.
    warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)
    # runpy's note that the worker module was imported before it runs as __main__: PRELOAD imported it on purpose.
    warnings.filterwarnings("ignore", message=r".*found in sys.modules after import", category=RuntimeWarning)
    for module in PRELOAD:
        __import__(module)
    _serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
