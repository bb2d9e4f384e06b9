"""sluice-watcher --source files: manifests in a directory drive a real sluice; edits, new and
removed files change the routing live; a broken file is reported and its last good version
stays in use."""
import json
import signal

from conftest import gw_config, http_get, wait_for
from helpers import WATCHER, free_port
from kube import fixtures as fx


def write(path, *objs):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(fx.to_yaml(*objs))
    tmp.rename(path)  # an atomic replace, as editors and `kubectl`-style tools do


def objects(name, host, up, path="/"):
    return [fx.service(name, ports=[fx.service_port(80, name="http", target_port=up.port)]),
            fx.endpoint_slice(name, addresses=[up.ip], ports=[("http", up.port)]),
            fx.ingress(name, host=host, path=path, service=name, port=80)]


def start(procs, d, gateway, *extra):
    hp = free_port()
    argv = [WATCHER, "--source", "files", "--manifests", d, "--healthz-listen", f"127.0.0.1:{hp}",
            "--debounce", "20ms"]
    if gateway is not None:
        argv += ["--push", f"http://127.0.0.1:{gateway.admin_port}/config"]
    p = procs.start(argv + list(extra), name="watcher-files")
    p.wait_log(r"first config applied", timeout=15)
    return p, f"http://127.0.0.1:{hp}/healthz"


def test_manifest_edits_change_routing_live(procs, tmp_path, gateway, upstreams):
    blue, green = upstreams("blue"), upstreams("green")
    d = tmp_path / "manifests"
    d.mkdir()
    write(d / "web.yaml", *objects("web", "a.example", blue))
    w, healthz = start(procs, d, gateway)
    assert http_get(healthz)[0] == 200

    def body(host):
        return http_get(gateway.url + "/", host=host)[:2]

    wait_for(lambda: body("a.example") == (200, "blue\n"))

    # edit: the EndpointSlice now points at green
    write(d / "web.yaml", *objects("web", "a.example", green))
    wait_for(lambda: body("a.example") == (200, "green\n"), what="the edit applied")

    # a new file adds a host; a JSON file works as well
    (d / "api.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                            "items": objects("api", "b.example", blue)}))
    wait_for(lambda: body("b.example") == (200, "blue\n"), what="the new file read")

    # a broken file: reported, its last good content stays
    (d / "web.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n")
    w.wait_log(r"web.yaml: document 1: line \d+ column \d+: .*keeping its previous 3 objects")
    assert body("a.example") == (200, "green\n")
    assert body("b.example") == (200, "blue\n")

    # objects with missing fields are reported and skipped; the rest is served
    write(d / "web.yaml", *objects("web", "a.example", green),
          {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {}},
          fx.ingress("nopath", host="c.example", service="web", path="relative"))
    w.wait_log(r"Ingress \(object 4\) has no metadata.name; skipped")
    w.wait_log(r"Ingress default/nopath: host c.example: path \"relative\" is not a valid")
    assert body("a.example") == (200, "green\n")

    # removing a file removes its routes
    (d / "api.json").unlink()
    wait_for(lambda: body("b.example")[0] == 404, what="the removed file's host gone")
    assert "default.api.80" not in gw_config(gateway)["upstreams"]


def test_output_file_and_sighup(procs, tmp_path, upstreams):
    blue = upstreams("blue")
    d = tmp_path / "manifests"
    d.mkdir()
    write(d / "web.yaml", *objects("web", "a.example", blue))
    out = tmp_path / "out" / "config.json"
    out.parent.mkdir()
    w, _ = start(procs, d, None, "--output", out)
    doc = json.loads(out.read_text())
    assert [r["name"] for r in doc["routes"]] == ["default/web/a.example/"]
    assert doc["upstreams"] == {"default.web.80": {"backends": [f"{blue.ip}:{blue.port}"]}}
    w.send(signal.SIGHUP)
    w.wait_log(r"SIGHUP: reading the manifests again")
    assert not [p for p in out.parent.iterdir() if p.name != "config.json"], "no temp files left"


def test_empty_and_missing_directory(procs, tmp_path, gateway):
    d = tmp_path / "empty"
    d.mkdir()
    w, _ = start(procs, d, gateway)
    assert gw_config(gateway).get("routes") == []
    p = procs.start([WATCHER, "--source", "files", "--manifests", tmp_path / "nope",
                     "--healthz-listen", "off"], name="missing")
    assert p.wait(10) == 1
    assert "not a directory" in p.log()
