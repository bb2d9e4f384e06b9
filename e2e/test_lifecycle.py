"""Server lifecycle (lessons 0-5): echo integrity, threads, daemon mode, signals, hot upgrade.

The lesson programs listen on the guide's fixed ports (6142, 6145); each test gives them their
own pid file and upgrade socket through a config file in its tmp dir."""
import os
import pwd
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import example, port_closed, run, wait_port

ECHO = example("00_basic_server")
CONF01 = example("01_configuration")
DAEMON = example("02_daemon_mode")
BATCH = example("03_graceful_shutdown")
THREADS = example("04_threading_model")
VISITS = example("05_background_services")


def write_conf(tmp_path, name="conf.yaml", **keys):
    lines = ["version: 1"]
    keys.setdefault("pid_file", str(tmp_path / "sluice.pid"))
    keys.setdefault("upgrade_sock", str(tmp_path / "upgrade.sock"))
    for k, v in keys.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, str):
            v = f'"{v}"'
        lines.append(f"{k}: {v}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def echo_roundtrip(payload, port=6142):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        got = bytearray()

        def reader():
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        t.join(60)
        return bytes(got)


def test_echo_200_concurrent_clients_and_10mib(procs, tmp_path):
    p = procs.start([ECHO, "-c", write_conf(tmp_path, threads=2)])
    wait_port(6142)
    payloads = [os.urandom(1000 + i * 37) for i in range(200)]
    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(echo_roundtrip, payloads))
    assert results == payloads
    big = os.urandom(10 * 1024 * 1024)
    assert echo_roundtrip(big) == big
    # Both workers accepted connections: shared-nothing threads really serve.
    text = p.wait_log(r"New connection from")
    assert "(worker 0)" in text and "(worker 1)" in text
    assert p.stop() == 0
    assert "SIGTERM received, gracefully exiting" in p.log()


def test_lesson01_prints_defaults_then_file_values(procs, tmp_path):
    p = procs.start([CONF01])
    text = p.wait_log(r"max_retries: 16")
    assert "threads: 1" in text and "pid_file: /tmp/pingora.pid" in text
    assert "error_log: None" in text
    p.stop(signal.SIGINT)
    conf = tmp_path / "01_config.yaml"
    conf.write_text('---\nversion: 1\nthreads: 2\npid_file: "/tmp/pingora_lesson_01.pid"\n'
                    'upgrade_sock: "/tmp/pingora_upgrade_01.sock"\n'
                    'error_log: "/tmp/pingora_error.log"\n')
    p = procs.start([CONF01, "-c", conf])
    text = p.wait_log(r"max_retries")
    assert "threads: 2" in text
    assert "pid_file: /tmp/pingora_lesson_01.pid" in text
    assert 'error_log: Some("/tmp/pingora_error.log")' in text
    wait_port(6143)
    # The dummy service closes every connection at once.
    with socket.create_connection(("127.0.0.1", 6143), timeout=5) as s:
        assert s.recv(10) == b""
    assert p.stop() == 0


def test_daemon_mode_pid_file_and_log(tmp_path):
    log = tmp_path / "daemon.log"
    pid_file = tmp_path / "daemon.pid"
    conf = write_conf(tmp_path, daemon=True, pid_file=str(pid_file), error_log=str(log))
    r = run([DAEMON, "-c", conf], timeout=10)
    assert r.returncode == 0, r.stderr
    assert "Preparing to daemonize" in r.stdout
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
        assert os.getsid(pid) == pid, "the daemon leads its own session"
        deadline = time.time() + 5
        while "Beep" not in log.read_text() and time.time() < deadline:
            time.sleep(0.1)
        assert "Beep... (PID: %d)" % pid in log.read_text()
        # A second daemon on the same pid file is refused, naming the running one.
        r2 = run([DAEMON, "-c", conf], timeout=10)
        assert r2.returncode == 3
        assert f"another instance is already running (pid {pid}" in r2.stderr + log.read_text()
        # SIGUSR1 reopens the log (rotation).
        rotated = tmp_path / "daemon.log.1"
        log.rename(rotated)
        os.kill(pid, signal.SIGUSR1)
        deadline = time.time() + 5
        while not (log.exists() and "Beep" in log.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        assert "log file reopened" in log.read_text()
        assert "Beep" in log.read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not pid_file.exists(), "the pid file is removed on exit"
    assert "Shutdown signal received. Stopping heartbeat." in log.read_text()


def test_daemon_bad_pid_file_and_busy_port(tmp_path, procs):
    conf = write_conf(tmp_path, daemon=True, pid_file="/nonexistent-dir/x.pid")
    r = run([DAEMON, "-c", conf], timeout=10)
    assert r.returncode == 3
    assert "cannot open pid file /nonexistent-dir/x.pid" in r.stderr
    # A port already in use: clear message, exit 3, before daemonizing.
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("0.0.0.0", 6142))
    blocker.listen()
    try:
        r = run([ECHO, "-d", "-c", write_conf(tmp_path, name="c2.yaml")], timeout=10)
        assert r.returncode == 3
        assert "cannot listen on 0.0.0.0:6142: address already in use" in r.stderr
        assert not (tmp_path / "sluice.pid").exists()
    finally:
        blocker.close()
    # Another sluice (SO_REUSEPORT) holding the port is detected too.
    first = procs.start([ECHO, "-c", write_conf(tmp_path, name="c3.yaml")])
    wait_port(6142)
    r = run([ECHO, "-c", write_conf(tmp_path, name="c4.yaml", pid_file=str(tmp_path / "b.pid"))],
            timeout=10)
    assert r.returncode == 3
    assert "address already in use" in r.stderr
    assert first.alive()


def test_sigterm_lets_a_job_finish_sigint_does_not(procs, tmp_path):
    env = {"BATCH_JOB_MS": "60000", "BATCH_WRAP_UP_MS": "3000"}
    p = procs.start([BATCH], env=env)
    p.wait_log(r"Starting Job #1")
    t0 = time.monotonic()
    p.send(signal.SIGTERM)
    assert p.wait(timeout=15) == 0
    elapsed = time.monotonic() - t0
    text = p.log()
    assert "SIGTERM received, gracefully exiting" in text
    assert "Finishing Job #1 before exiting" in text
    assert "Job #1 completed gracefully during shutdown." in text
    assert elapsed >= 2.5, "the process waited for the job"

    p = procs.start([BATCH], env=env)
    p.wait_log(r"Starting Job #1")
    t0 = time.monotonic()
    p.send(signal.SIGINT)
    p.wait(timeout=5)
    assert time.monotonic() - t0 < 2
    text = p.log()
    assert "SIGINT received, exiting" in text
    assert "Finishing Job" not in text and "completed" not in text


def test_grace_period_bounds_the_wait(procs, tmp_path):
    # A job that would need 60 s to wrap up is cut at grace (1 s) + shutdown timeout (1 s).
    conf = write_conf(tmp_path, graceful_shutdown_timeout_seconds=1)
    env = {"BATCH_JOB_MS": "60000", "BATCH_WRAP_UP_MS": "60000"}
    p = procs.start([BATCH, "-c", conf], env=env)
    p.wait_log(r"Starting Job #1")
    # The example forces grace_period_seconds = 10, as the lesson does.
    t0 = time.monotonic()
    p.send(signal.SIGTERM)
    p.wait(timeout=20)
    elapsed = time.monotonic() - t0
    assert 10.5 <= elapsed < 14, elapsed
    assert "graceful shutdown timed out" in p.log()


def test_two_threads_run_background_services(procs):
    p = procs.start([THREADS])
    text = p.wait_log(r"I am running on thread", count=4)
    tids = set()
    for line in text.splitlines():
        if "I am running on thread" in line:
            tids.add(line.split("ThreadId(")[1].split(")")[0])
    assert len(tids) == 2, text
    assert "worker 0" in text and "worker 1" in text
    assert p.stop() == 0


def test_lesson05_counts_visitors(procs):
    p = procs.start([VISITS])
    p.wait_log(r"started, pid")  # not wait_port: a probe connection would count as a visit
    for i in range(1, 5):
        with socket.create_connection(("127.0.0.1", 6145), timeout=5) as s:
            s.sendall(b"HELLO\n")
            data = b""
            while True:
                chunk = s.recv(100)
                if not chunk:
                    break
                data += chunk
            assert data == f"Hello! You are visitor #{i}\n".encode()
    p.wait_log(r"Exporter: Current Total Connections: 4", timeout=5)
    assert p.stop() == 0
    assert "Exporter: Shutdown requested." in p.log()


def test_hot_upgrade_refuses_no_connection(procs, tmp_path):
    conf = write_conf(tmp_path, threads=2)
    old = procs.start([VISITS, "-c", conf], name="old")
    wait_port(6145)
    stop = threading.Event()
    stats = {"ok": 0, "failed": 0, "errors": []}

    def client_loop():
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", 6145), timeout=5) as s:
                    s.sendall(b"hi\n")
                    data = s.recv(100)
                    if data.startswith(b"Hello! You are visitor #"):
                        stats["ok"] += 1
                    else:
                        stats["failed"] += 1
                        stats["errors"].append(repr(data))
            except OSError as e:
                stats["failed"] += 1
                stats["errors"].append(str(e))

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        new = procs.start([VISITS, "-u", "-c", conf], name="new")
        new.wait_log(r"waiting for the old process")
        before = stats["ok"]
        old.send(signal.SIGQUIT)
        new.wait_log(r"received \d+ listening socket")
        assert old.wait(timeout=15) == 0
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert stats["failed"] == 0, stats["errors"][:5]
    assert stats["ok"] > before > 0
    assert "handed 2 listening socket(s) to the new process" in old.log()
    assert "Traffic: New connection handled" in new.log(), "the new process serves"
    assert new.alive()
    assert new.stop() == 0


def test_sigquit_without_a_new_process_keeps_serving(procs, tmp_path):
    p = procs.start([VISITS, "-c", write_conf(tmp_path)])
    wait_port(6145)
    p.send(signal.SIGQUIT)
    p.wait_log(r"no new process is waiting")
    time.sleep(0.2)
    assert p.alive()
    with socket.create_connection(("127.0.0.1", 6145), timeout=5) as s:
        assert s.recv(100).startswith(b"Hello!")
    assert p.stop() == 0


def test_sigterm_stops_accepting(procs, tmp_path):
    p = procs.start([ECHO, "-c", write_conf(tmp_path)])
    wait_port(6142)
    held = socket.create_connection(("127.0.0.1", 6142))
    held.sendall(b"x")
    assert held.recv(1) == b"x"
    p.send(signal.SIGTERM)
    p.wait_log(r"SIGTERM received")
    # The echo app closes its connections on shutdown; the port is closed for new ones.
    assert held.recv(10) == b""
    held.close()
    assert p.wait(timeout=10) == 0
    assert port_closed(6142)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_user_and_group_drop_privileges(procs, tmp_path):
    os.chmod(tmp_path, 0o777)
    p = procs.start([ECHO, "-c", write_conf(tmp_path, user="nobody", group="nogroup")])
    p.wait_log(r"started, pid")  # the port binds before the identity changes
    wait_port(6142)
    status = open(f"/proc/{p.pid}/status").read()
    uid = pwd.getpwnam("nobody").pw_uid
    assert f"Uid:\t{uid}\t{uid}\t{uid}" in status
    assert p.stop() == 0
