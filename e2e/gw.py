"""Running the sluice gateway in tests: write a config, start build/sluice, talk to its admin API."""
import json
import subprocess
import time
import urllib.error
import urllib.request

import yaml

from helpers import SLUICE, free_port, wait_port


class Gateway:
    """A sluice process on free ports. `conf` is the gateway part of the config (dict); the
    listener and admin addresses are filled in."""

    def __init__(self, procs, tmp_path, conf, threads=1, token=None, name="sluice", extra=None,
                 more_listeners=(), env=None):
        self.port = free_port()
        self.admin_port = free_port()
        self.tmp_path = tmp_path
        doc = {
            "version": 1,
            "threads": threads,
            "pid_file": str(tmp_path / f"{name}.pid"),
            "upgrade_sock": str(tmp_path / f"{name}.upgrade.sock"),
            "grace_period_seconds": 5,
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            "listeners": [{"name": "web", "listen": f"127.0.0.1:{self.port}"}],
        }
        if token:
            doc["admin"]["token"] = token
        doc["listeners"] += list(more_listeners)
        doc.update(extra or {})
        doc.update(conf)
        self.token = token
        self.path = tmp_path / f"{name}.yaml"
        self.write(doc)
        self.proc = procs.start([SLUICE, "-c", self.path], name=name, env=env)
        wait_port(self.port)
        wait_port(self.admin_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def write(self, doc):
        self.doc = doc
        self.path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def get(self, path, host=None, method="GET", headers=None, timeout=10):
        """(status, headers, body) of a request through the gateway."""
        h = dict(headers or {})
        if host:
            h["Host"] = host
        req = urllib.request.Request(self.url + path, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def admin_call(self, method, path, body=None, token=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        req = urllib.request.Request(self.admin + path, data=data, method=method)
        tok = token if token is not None else self.token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def put_config(self, conf, token=None):
        status, headers, body = self.admin_call("PUT", "/config", conf, token=token)
        return status, json.loads(body)

    def metrics(self):
        return self.admin_call("GET", "/metrics")[2].decode()

    def wait_log(self, pattern, timeout=10):
        return self.proc.wait_log(pattern, timeout=timeout)


def check_config(tmp_path, text, name="t.yaml"):
    """sluice -t on a config text; returns the CompletedProcess."""
    p = tmp_path / name
    p.write_text(text)
    return subprocess.run([str(SLUICE), "-t", "-c", str(p)], capture_output=True, text=True,
                          timeout=30)


def wait_until(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")
