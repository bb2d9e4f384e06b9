"""Lessons 26, 27, 34 and 35 (load balancing, discovery, hot swap) as the guide verifies them."""
import time

import pytest

from labkit import REPO, LabProcess, curl, lab_run, wait_until

EX = REPO / "build" / "examples"
DEV = "http://172.28.0.10"
BLUE, GREEN = "'Response from BLUE'\n", "'Response from GREEN'\n"


@pytest.fixture(autouse=True)
def _lab(lab):
    return lab


def test_lesson26_round_robin_alternates():
    with LabProcess("dev", EX / "26_round_robin") as p:
        p.wait_port(6170)
        got = [curl("client1", f"{DEV}:6170/").stdout for _ in range(4)]
        assert got in ([BLUE, GREEN] * 2, [GREEN, BLUE] * 2)
        assert "Selected upstream: Backend { addr: Inet(172.28.0.20:8080)" in p.output
        assert "Selected upstream: Backend { addr: Inet(172.28.0.21:8080)" in p.output
        assert "round_robin_lb: no discovery to run; background service exited" in p.output


def test_lesson27_weighted_three_to_one():
    with LabProcess("dev", EX / "27_weighted_lb") as p:
        p.wait_port(6171)
        got = [curl("client1", f"{DEV}:6171/").stdout for _ in range(8)]
        for i in (0, 4):  # every window of four requests is exactly 3:1
            window = got[i:i + 4]
            assert window.count(BLUE) == 3 and window.count(GREEN) == 1, got


def test_lesson34_file_discovery(tmp_path):
    (tmp_path / "conf").mkdir()
    upstreams = tmp_path / "conf" / "upstreams.txt"
    upstreams.write_text("# the lab's blue\n172.28.0.20:8080\n")
    with LabProcess("dev", EX / "34_service_discovery_file", cwd=tmp_path) as p:
        p.wait_port(6178)
        assert curl("client1", f"{DEV}:6178/").stdout == BLUE
        upstreams.write_text("172.28.0.21:8080\n")
        wait_until(lambda: curl("client1", f"{DEV}:6178/").stdout == GREEN, timeout=3,
                   what="traffic to follow the file to green")
        assert "Routed to upstream: Backend { addr: Inet(172.28.0.21:8080)" in p.output


def test_lesson35_hot_swap_api():
    with LabProcess("dev", EX / "35_dynamic_reconfiguration") as p:
        p.wait_port(6179)
        assert curl("client1", f"{DEV}:6179/").stdout == BLUE
        r = lab_run("dev", "curl", "-s", "-d", "172.28.0.21:8080", "http://127.0.0.1:9090/")
        assert r.stdout == "OK"
        p.wait_output("Admin: Hot-swapped upstream to 172.28.0.21:8080")
        t0 = time.monotonic()
        wait_until(lambda: curl("client1", f"{DEV}:6179/").stdout == GREEN, timeout=3,
                   what="traffic to switch to green")
        assert time.monotonic() - t0 < 1.5  # discovery polls the state every 500 ms
        r = lab_run("dev", "curl", "-s", "-d", "not-an-address", "http://127.0.0.1:9090/")
        assert r.stdout == "Parse Error"
        assert curl("client1", f"{DEV}:6179/").stdout == GREEN
