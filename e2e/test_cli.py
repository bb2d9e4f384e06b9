"""The command line (SPEC §3): flags, -t, exit codes, config errors that name the key path."""
import pytest

from helpers import SLUICE, example, run

ECHO = example("00_basic_server")


def test_version_and_help():
    r = run([SLUICE, "--version"])
    assert r.returncode == 0 and r.stdout.startswith("sluice ")
    r = run([SLUICE, "-h"])
    assert r.returncode == 0
    for flag in ("-c, --conf", "-d, --daemon", "-t, --test", "-u, --upgrade", "--version"):
        assert flag in r.stdout


def test_usage_error_exits_2():
    r = run([SLUICE, "--bogus"])
    assert r.returncode == 2
    assert "unknown argument '--bogus'" in r.stderr
    r = run([SLUICE, "-c"])
    assert r.returncode == 2


@pytest.mark.parametrize("prog", [SLUICE, ECHO])
def test_t_accepts_a_good_config(tmp_path, prog):
    conf = tmp_path / "ok.yaml"
    conf.write_text("version: 1\nthreads: 2\ngrace_period_seconds: 5\n")
    r = run([prog, "-t", "-c", conf])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "configuration OK"
    conf = tmp_path / "ok.json"
    conf.write_text('{"version": 1, "threads": 2}')
    r = run([prog, "-t", "-c", conf])
    assert r.returncode == 0, r.stderr


BAD = [
    ("threads: two\n", 'threads: expected an integer, got string "two"'),
    ("threads: 0\n", "threads: 0 is out of range"),
    ("daemon: 1\n", "daemon: expected a boolean, got integer 1"),
    ("treads: 2\n", 'treads: unknown key (did you mean "threads"?)'),
    ("pid_file: [a]\n", "pid_file: expected a string, got list"),
    ("grace_period_seconds: -1\n", "grace_period_seconds: -1 is out of range"),
    ("threads: [1\n", "invalid YAML"),
    ("threads: 1\nthreads: 2\n", 'duplicate key "threads"'),
    ("- 1\n", "(top level): expected a mapping"),
]


@pytest.mark.parametrize("text,msg", BAD)
def test_t_rejects_bad_configs_with_the_key_path(tmp_path, text, msg):
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    r = run([ECHO, "-t", "-c", conf])
    assert r.returncode == 1
    assert msg in r.stderr
    assert "configuration OK" not in r.stdout


def test_missing_and_unreadable_config(tmp_path):
    r = run([ECHO, "-t", "-c", tmp_path / "nope.yaml"])
    assert r.returncode == 1
    assert "cannot open" in r.stderr and "No such file or directory" in r.stderr
    d = tmp_path / "adir.yaml"
    d.mkdir()
    r = run([ECHO, "-c", d])
    assert r.returncode == 1
    assert "adir.yaml" in r.stderr


def test_invalid_config_without_t_exits_1(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("threads: lots\n")
    r = run([ECHO, "-c", conf])
    assert r.returncode == 1
    assert 'threads: expected an integer, got string "lots"' in r.stderr
