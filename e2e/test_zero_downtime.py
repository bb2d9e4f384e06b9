"""Zero downtime (issue: gateway): while wrk drives steady traffic, 200 configuration changes
(routes added and removed, backends swapped, weights changed) go in through PUT /config and
PUT /upstreams; not one request fails or is reset, and a download that started before the
first change completes intact."""
import hashlib
import re
import subprocess
import threading

from gw import Gateway


def conf_variant(i, addrs):
    a, b = addrs
    backends = [[{"address": a, "weight": 1 + i % 3}, {"address": b, "weight": 1}], [a], [b]][i % 3]
    routes = [{"name": "main", "match": {"path": "/"}, "upstream": "u"},
              {"name": "big", "match": {"path": "/big", "path_type": "exact"}, "upstream": "big"}]
    for k in range(i % 7):
        routes.insert(0, {"name": f"extra-{i}-{k}", "match": {"path": f"/extra/{i}/{k}"},
                          "respond": {"status": 200, "body": "x"}})
    return {"upstreams": {"u": {"backends": backends}, "big": {"backends": [a]}},
            "routes": routes}


def test_200_changes_under_load(procs, tmp_path, nginx_up):
    g = Gateway(procs, tmp_path, conf_variant(0, nginx_up.addrs), threads=2)
    want = hashlib.sha256(nginx_up.big.read_bytes()).hexdigest()
    download = {}

    def slow_download():
        r = subprocess.run(["curl", "-sS", "--limit-rate", "2M", f"{g.url}/big"],
                           capture_output=True, timeout=60)
        download["rc"], download["sha"] = r.returncode, hashlib.sha256(r.stdout).hexdigest()
        download["len"] = len(r.stdout)
        download["head"] = r.stdout[:60]

    wrk = subprocess.Popen(["wrk", "-t2", "-c32", "-d8s", f"{g.url}/"], stdout=subprocess.PIPE,
                           text=True)
    dl = threading.Thread(target=slow_download)
    dl.start()
    applied = 0
    for i in range(1, 201):
        if i % 4 == 0:
            status, _, _ = g.admin_call("PUT", "/upstreams/u/backends",
                                        [nginx_up.addrs[i % 2]])
        else:
            status, _ = g.put_config(conf_variant(i, nginx_up.addrs))
        assert status == 200
        applied += 1
    out, _ = wrk.communicate(timeout=60)
    dl.join(60)
    assert applied == 200
    total = int(re.search(r"(\d+) requests in", out).group(1))
    assert total > 1000, out
    assert "Non-2xx" not in out, out
    assert "Socket errors" not in out, out
    assert (download["rc"], download["sha"]) == (0, want), download
    assert 'sluice_config_reloads_total{result="success"} 200' in g.metrics()
