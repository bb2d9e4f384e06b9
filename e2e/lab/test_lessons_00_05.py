"""Lessons 0-5 as the guide verifies them, inside the lab: programs run on dev, traffic comes
from client1/client2, exactly as `docker exec pingora_client_1 ...` would."""
import signal
import time

import pytest

from labkit import IP, LabProcess, lab_run

EX = "build/examples/"


@pytest.fixture(autouse=True)
def _lab(lab):
    return lab


def test_lesson00_echo_over_the_network():
    with LabProcess("dev", EX + "00_basic_server") as p:
        p.wait_port(6142)
        r = lab_run("client1", "sh", "-c", "printf 'Hello Pingora\\n' | nc -q 1 172.28.0.10 6142")
        assert r.stdout == "Hello Pingora\n"
        r = lab_run("client2", "sh", "-c",
                    "printf 'Hello Pingora\\n' | nc -q 1 dev.pingora.local 6142")
        assert r.stdout == "Hello Pingora\n"
        p.wait_output("Client closed connection")
        assert "New connection from: 172.28.0.30" in p.output
        assert "New connection from: 172.28.0.31" in p.output


def test_lesson01_config_file(tmp_path):
    conf = tmp_path / "01_config.yaml"
    conf.write_text('---\nversion: 1\nthreads: 2\npid_file: "/tmp/pingora_lesson_01.pid"\n'
                    'upgrade_sock: "/tmp/pingora_upgrade_01.sock"\n'
                    'error_log: "/tmp/pingora_error.log"\n')
    with LabProcess("dev", EX + "01_configuration", "-c", conf) as p:
        p.wait_output("max_retries")
        assert "threads: 2" in p.output
        assert "pid_file: /tmp/pingora_lesson_01.pid" in p.output
        assert 'error_log: Some("/tmp/pingora_error.log")' in p.output
        p.wait_port(6143)


def test_lesson02_daemon(tmp_path):
    pid_file = tmp_path / "pingora_02.pid"
    log = tmp_path / "pingora_02.log"
    conf = tmp_path / "02_daemon.yaml"
    conf.write_text(f'---\nversion: 1\ndaemon: true\npid_file: "{pid_file}"\n'
                    f'error_log: "{log}"\nupgrade_sock: "{tmp_path}/up.sock"\n')
    r = lab_run("dev", EX + "02_daemon_mode", "-c", conf)
    assert r.returncode == 0, r.stderr
    assert "Preparing to daemonize" in r.stdout
    pid = pid_file.read_text().strip()
    assert lab_run("dev", "ps", "-p", pid).returncode == 0
    time.sleep(1.5)
    assert "Beep..." in log.read_text()
    lab_run("dev", "kill", pid)
    deadline = time.time() + 5
    while "Shutdown signal received" not in log.read_text() and time.time() < deadline:
        time.sleep(0.1)
    assert "Shutdown signal received. Stopping heartbeat." in log.read_text()


def test_lesson03_graceful_then_fast():
    env = {"BATCH_JOB_MS": "30000", "BATCH_WRAP_UP_MS": "2000"}
    p = LabProcess("dev", EX + "03_graceful_shutdown", env=env)
    p.wait_output("Starting Job #1")
    assert p.stop(signal.SIGTERM) == 0
    out = p.output
    assert "SIGTERM received, gracefully exiting" in out
    assert "Job #1 completed gracefully during shutdown." in out
    p = LabProcess("dev", EX + "03_graceful_shutdown", env=env)
    p.wait_output("Starting Job #1")
    p.stop(signal.SIGINT)
    assert "SIGINT received, exiting" in p.output
    assert "Finishing Job" not in p.output


def test_lesson04_two_threads():
    with LabProcess("dev", EX + "04_threading_model") as p:
        p.wait_output("I am running on thread", timeout=5)
        time.sleep(1.2)
        ids = {line.split("ThreadId(")[1].split(")")[0]
               for line in p.output.splitlines() if "ThreadId(" in line}
        assert len(ids) == 2


def test_validate_others_scenario():
    """The guide's scripts/validate-others.sh: example 05 on dev, 4 connections from both
    clients by IP and by name, SIGTERM, and the log shows 4 connections."""
    p = LabProcess("dev", EX + "05_background_services", env={"SLUICE_LOG": "info"})
    p.wait_output("started, pid")
    replies = []
    for client in ("client1", "client2"):
        for target in (IP["dev"], "dev.pingora.local"):
            r = lab_run(client, "sh", "-c", f"echo 'HELLO' | nc -w 1 {target} 6145")
            replies.append(r.stdout)
    assert sorted(replies) == [f"Hello! You are visitor #{i}\n" for i in range(1, 5)]
    p.wait_output("Current Total Connections: 4", timeout=5)
    assert p.stop(signal.SIGTERM) == 0
    assert "Current Total Connections: 4" in p.output
    assert "Exporter: Shutdown requested." in p.output
