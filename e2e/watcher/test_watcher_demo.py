"""The manifests of `make run` (e2e/demo/, SPEC §8) drive a real sluice as the demo promises:
/blue, /green, / over both, and green.localhost (the demo's ports replaced by free ones)."""
from conftest import NamedUpstream, http_get, wait_for, ROOT
from helpers import WATCHER, free_port


def test_demo_manifests_route_as_documented(procs, tmp_path, gateway):
    port = free_port()
    blue = NamedUpstream("Response from BLUE", "127.0.0.2", port)
    green = NamedUpstream("Response from GREEN", "127.0.0.3", port)
    try:
        d = tmp_path / "demo"
        d.mkdir()
        for f in sorted((ROOT / "e2e" / "demo").glob("*.yaml")):
            text = f.read_text()
            text = text.replace("18081", str(port)).replace("18082", str(port))
            # the demo's blue and green share 127.0.0.1; here they have an address each
            parts = text.split("---")
            out = []
            for p in parts:
                if "name: green" in p or "name: both-green" in p:
                    p = p.replace("127.0.0.1", green.ip)
                else:
                    p = p.replace("127.0.0.1", blue.ip)
                out.append(p)
            (d / f.name).write_text("---".join(out))
        w = procs.start([WATCHER, "--source", "files", "--manifests", d, "--healthz-listen", "off",
                         "--push", f"http://127.0.0.1:{gateway.admin_port}/config"], name="demo")
        w.wait_log("first config applied")

        def get(path, host=None):
            return http_get(gateway.url + path, host=host)[:2]

        assert get("/blue") == (200, "Response from BLUE\n")
        assert get("/green/x") == (200, "Response from GREEN\n")
        assert get("/", host="green.localhost") == (200, "Response from GREEN\n")
        seen = set()
        wait_for(lambda: seen.add(get("/")[1]) or len(seen) == 2, what="/ balanced over both")
    finally:
        blue.close()
        green.close()
