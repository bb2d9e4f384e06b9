"""sluice-watcher's command line (SPEC §6): every flag is known, bad values are usage errors
(exit 2) with a clear message."""
import re

import pytest

from helpers import WATCHER, run

SPEC_FLAGS = ["--source", "--manifests", "--kubeconfig", "--api-server", "--token-file",
              "--ca-file", "--push", "--output", "--admin-token-file", "--controller-class",
              "--ingress-class", "--watch-ingress-without-class", "--watch-namespace",
              "--publish-service", "--publish-status-address", "--update-status",
              "--election-id", "--election-namespace", "--default-ssl-certificate",
              "--default-backend-service", "--debounce", "--healthz-listen"]


def test_help_lists_every_spec_flag():
    r = run([WATCHER, "--help"])
    assert r.returncode == 0
    for f in SPEC_FLAGS:
        assert re.search(rf"^\s+{re.escape(f)}\b", r.stdout, re.M), f
    v = run([WATCHER, "--version"])
    assert v.returncode == 0 and v.stdout.startswith("sluice-watcher")


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unknown flag --bogus"),
    (["positional"], 'unexpected argument "positional"'),
    (["--source", "etcd"], "--source: expected kubernetes or files"),
    (["--source", "files"], "--source files needs --manifests DIR"),
    (["--manifests", "/tmp"], "--manifests goes with --source files"),
    (["--push", "http://a/config", "--output", "/tmp/x"], "--push and --output exclude each other"),
    (["--push", "ftp://a/config"], "--push: expected an http:// or https:// URL"),
    (["--api-server", "localhost:6443"], "--api-server: expected an http:// or https:// URL"),
    (["--publish-service", "noslash"], "--publish-service: expected NAMESPACE/NAME"),
    (["--default-backend-service", "Bad_NS/x"], "is not a valid NAMESPACE/NAME"),
    (["--default-ssl-certificate", "a/b/c"], "is not a valid NAMESPACE/NAME"),
    (["--debounce", "soon"], '--debounce: "soon" is not a duration'),
    (["--debounce", "5m"], "--debounce: at most 1m"),
    (["--update-status=maybe"], "--update-status: expected true or false"),
    (["--healthz-listen", "localhost"], "--healthz-listen: expected IP:PORT or off"),
    (["--watch-namespace", "Not A Namespace"], "--watch-namespace"),
    (["--election-id", "UPPER"], "--election-id"),
    (["--election-lease-duration", "1s"], "need lease duration > renew deadline"),
    (["--ingress-class"], "--ingress-class needs a value"),
])
def test_usage_errors_exit_2(args, message):
    r = run([WATCHER] + args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "usage: sluice-watcher" in r.stderr


def test_no_cluster_is_a_clear_runtime_error(tmp_path):
    import os
    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    r = run([WATCHER, "--healthz-listen", "off", "--output", tmp_path / "c.json"], env=env)
    assert r.returncode == 1
    assert "not running in a cluster" in r.stderr


def test_broken_kubeconfig(tmp_path):
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    r = run([WATCHER, "--kubeconfig", kc, "--healthz-listen", "off"])
    assert r.returncode == 1
    assert "no current context with a cluster and server" in r.stderr
    kc.write_text("current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
                  "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
                  "users: [{name: u, user: {exec: {command: aws}}}]\n")
    r = run([WATCHER, "--kubeconfig", kc, "--healthz-listen", "off"])
    assert r.returncode == 1
    assert "exec or auth-provider plugin" in r.stderr
