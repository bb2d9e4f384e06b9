"""Shared helpers for sluice's end-to-end tests: paths, ports, and managed processes.

Every process a test starts goes through `Proc`, which logs to a file, can wait for a log line
or a listening port, and fails the test if a sanitizer (ASan/UBSan/LSan) reported anything.
"""
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# SLUICE_BUILD: run the tests against another build tree (e.g. a private `make B=/tmp/x SAN=1`).
BUILD = Path(os.environ.get("SLUICE_BUILD", ROOT / "build"))
FORWARD = BUILD / "tools" / "sl-forward"  # the engine's minimal forwarder
SLUICE = BUILD / "sluice"
WATCHER = BUILD / "sluice-watcher"
PYTHON = "/usr/bin/python3"

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer")


def example(name):
    """Path of a lesson program, e.g. example("05_background_services")."""
    return BUILD / "examples" / name


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (the kernel's ephemeral choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=10.0):
    """Waits until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def port_closed(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return False
    except OSError:
        return True


class Proc:
    """A process under test, its output in a log file."""

    def __init__(self, argv, log_path, env=None, cwd=None):
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        full_env = dict(os.environ)
        full_env.setdefault("SLUICE_LOG", "info")
        if env:
            full_env.update(env)
        self._log = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=full_env, cwd=cwd,
                                  start_new_session=True)
        self.pid = self.p.pid

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=10.0, count=1):
        """Waits until `pattern` (a regex) matched `count` times in the log; returns the log."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if len(rx.findall(text)) >= count:
                return text
            if self.p.poll() is not None:
                text = self.log()
                if len(rx.findall(text)) >= count:
                    return text
                raise AssertionError(f"{self.argv[0]} exited ({self.p.returncode}) before "
                                     f"logging {pattern!r}:\n{text[-4000:]}")
            time.sleep(0.02)
        raise TimeoutError(f"no {pattern!r} in the log after {timeout}s:\n{self.log()[-4000:]}")

    def send(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def wait(self, timeout=10.0):
        return self.p.wait(timeout=timeout)

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Signals and waits; kills if it does not exit. Returns the exit code."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._log.close()
        return self.p.returncode

    def sanitizer_report(self):
        text = self.log()
        for mark in SANITIZER_MARKS:
            if mark in text:
                i = text.index(mark)
                return text[max(0, i - 200): i + 3000]
        return None


class ProcSet:
    """Starts processes for one test and cleans them up, checking sanitizer output."""

    def __init__(self, tmp_path):
        self.tmp_path = Path(tmp_path)
        self.procs = []

    def start(self, argv, name=None, env=None, cwd=None):
        name = name or Path(str(argv[0])).name
        log = self.tmp_path / f"{name}.{len(self.procs)}.log"
        p = Proc(argv, log, env=env, cwd=cwd)
        self.procs.append(p)
        return p

    def cleanup(self):
        reports = []
        for p in self.procs:
            p.stop()
            rep = p.sanitizer_report()
            if rep:
                reports.append(f"{p.argv}:\n{rep}")
        return reports


def run(argv, timeout=30, **kw):
    """Runs a command to completion; returns CompletedProcess with text output."""
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, **kw)
