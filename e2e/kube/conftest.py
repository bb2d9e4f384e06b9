"""Fixtures for the Kubernetes emulator's own tests.

`kube` starts an emulator over TLS with the bearer token "t" (bookmarks every 0.2 s) and stops
it after the test; `kclient` is an official python3-kubernetes ApiClient configured from the
emulator's kubeconfig (CA file + token).
"""
import pytest

from kube.apiserver import KubeAPIServer


@pytest.fixture(scope="session")
def kube_cert_dir(tmp_path_factory):
    """One CA and serving certificate for the whole session (openssl runs once)."""
    return tmp_path_factory.mktemp("kube-certs")


@pytest.fixture
def kube(tmp_path, kube_cert_dir):
    srv = KubeAPIServer(tls=True, token="t", state_dir=tmp_path / "kube", bookmark_interval=0.2,
                        cert_dir=kube_cert_dir)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def kclient(kube):
    kubernetes = pytest.importorskip("kubernetes")
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kube.kubeconfig, client_configuration=cfg)
    api = kubernetes.client.ApiClient(cfg)
    yield api
    api.close()
