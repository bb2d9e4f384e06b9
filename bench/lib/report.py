"""sluice bench: tables and ratios to the best peer, from the results dict built by bench.py."""

PEERS = ("nginx", "haproxy", "h2o")
# A peer whose errors exceed this share of its requests cannot be "best" at anything.
MAX_ERROR_SHARE = 0.001


def _num(v, fmt):
    return "-" if v is None else fmt.format(v)


def _ms(us):
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us < 100000 else f"{us / 1000:.0f} ms"


def _mib(kb):
    return "-" if kb is None else f"{kb / 1024:.1f} MiB"


def _errors(r):
    return (r.get("errors_total") or 0) + (r.get("non_2xx") or 0)


def _clean(r):
    req = max(1, r.get("requests") or 0)
    return r.get("status") == "ok" and _errors(r) <= MAX_ERROR_SHARE * req


# metric key, label, "higher"/"lower" is better, formatter for the best value
METRICS = {
    "h1": [
        ("rps", "req/s", "higher", lambda v: f"{v:,.0f}/s"),
        ("cpu_us_per_req", "CPU/req", "lower", lambda v: f"{v:.1f} µs"),
        ("p50_us", "p50", "lower", _ms),
        ("p99_us", "p99", "lower", _ms),
        ("peak_kb", "peak RSS", "lower", _mib),
    ],
    "idle": [
        ("growth_pss_kb", "idle growth (PSS)", "lower", _mib),
        ("bytes_per_conn", "bytes/idle conn", "lower", lambda v: f"{v:,.0f} B"),
        ("cpu_us_per_conn", "CPU/new conn", "lower", lambda v: f"{v:.1f} µs"),
        ("peak_kb", "peak RSS", "lower", _mib),
    ],
}
METRICS["h2"] = METRICS["h1"]


def best_peer(results, key, better):
    """(name, value) of the best clean peer for one metric, or (None, None)."""
    cands = [(n, results[n][key]) for n in PEERS
             if n in results and _clean(results[n]) and results[n].get(key) is not None]
    if not cands:
        return None, None
    pick = max if better == "higher" else min
    return pick(cands, key=lambda c: c[1])


def ratios(scenario, results):
    """{name: {metric: {ratio, best, best_value}}} for every row that ran, vs the best peer."""
    out = {}
    for key, _label, better, _fmt in METRICS[scenario]:
        bname, bval = best_peer(results, key, better)
        if bname is None or not bval:
            continue
        for name, r in results.items():
            if r.get("status") != "ok" or r.get(key) is None or name == "direct":
                continue
            out.setdefault(name, {})[key] = {
                "ratio": round(r[key] / bval, 3), "best": bname, "best_value": bval}
    return out


def _table(headers, rows):
    """rows: lists of cells, or (name, message) tuples printed across the whole line."""
    cells = [r for r in rows if isinstance(r, list)]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    widths[0] = max([widths[0]] + [len(r[0]) for r in rows])
    line = lambda cs: "  " + "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cs, widths)))
    out = [line(headers), "  " + "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append(line(r) if isinstance(r, list) else f"  {r[0].ljust(widths[0])}  {r[1]}")
    return "\n".join(out)


def _status_row(name, r, ncols=None):
    msg = r.get("status", "?")
    if r.get("note"):
        msg += ": " + r["note"]
    return (name, msg)


def _busy(r):
    a, b = r.get("core_proxy"), r.get("core_client")
    if not a or not b:
        return "-"
    return f"{a['busy_pct']:.0f}/{b['busy_pct']:.0f}%"


def _ratio_lines(scenario, results, rat):
    lines = []
    for name in [n for n in results if n not in PEERS and n != "direct"]:
        r = results[name]
        if r.get("status") != "ok":
            note = f" ({r['note']})" if r.get("note") and r.get("status") != "failed" else ""
            lines.append(f"  {name}: {r.get('status')}{note} - no ratios")
            continue
        if not _clean(r):
            lines.append(f"  WARNING: {name} had {_errors(r):,} errors/non-2xx responses; "
                         "its speed is not comparable")
        if not rat.get(name):
            lines.append(f"  {name}: no clean peer (nginx, haproxy, h2o) in this run - no ratios")
        for key, label, better, fmt in METRICS[scenario]:
            x = rat.get(name, {}).get(key)
            if not x:
                continue
            lines.append(f"  {name} {label} = {x['ratio']:.2f}× best ({x['best']} "
                         f"{fmt(x['best_value'])})   [{better} is better]")
    return lines


def render(scenario, title, results, params):
    """Text of one scenario: title, table, ratio lines, notes."""
    rat = ratios(scenario, results)
    out = [f"== {title} =="]
    if scenario in ("h1", "h2"):
        headers = ["proxy", "req/s", "CPU/req", "×best", "proxy CPU", "busy c0/c1", "p50",
                   "p99", "errors", "new up-conns", "peak RSS"]
        rows = []
        for name, r in results.items():
            if r.get("status") != "ok":
                rows.append(_status_row(name, r, len(headers)))
                continue
            x = rat.get(name, {}).get("cpu_us_per_req")
            err = _errors(r)
            rows.append([
                name + (" (no proxy)" if name == "direct" else ""),
                _num(r.get("rps"), "{:,.0f}"),
                _num(r.get("cpu_us_per_req"), "{:.1f} µs"),
                f"{x['ratio']:.2f}×" if x else "-",
                _num(r.get("proxy_cpu_pct"), "{:.0f}%"),
                _busy(r),
                _ms(r.get("p50_us")), _ms(r.get("p99_us")),
                f"{err:,}" + (" !" if err else ""),
                _num(r.get("upstream_new_conns"), "{:,}"),
                _mib(r.get("peak_kb")),
            ])
        out.append(_table(headers, rows))
    else:
        headers = ["proxy", "idle conns", "RSS before", "RSS after", "growth RSS",
                   "growth PSS", "bytes/conn", "CPU/new conn", "failed", "peak RSS"]
        rows = []
        for name, r in results.items():
            if r.get("status") != "ok":
                rows.append(_status_row(name, r, len(headers)))
                continue
            rows.append([
                name, f"{r['alive']:,}/{r['requested']:,}",
                _mib(r["before"]["rss_kb"]), _mib(r["after"]["rss_kb"]),
                _mib(r["growth_rss_kb"]), _mib(r["growth_pss_kb"]),
                _num(r.get("bytes_per_conn"), "{:,.0f}"),
                _num(r.get("cpu_us_per_conn"), "{:.1f} µs"),
                f"{r['failed']:,}" + (" !" if r["failed"] else ""),
                _mib(r.get("peak_kb")),
            ])
        out.append(_table(headers, rows))
    out += _ratio_lines(scenario, results, rat)
    for name, r in results.items():
        out += [f"  note: {name}: {w}" for w in r.get("warnings", ())]
    return "\n".join(out), rat


# ---- the `tls` scenario: one table per handshake kind, ratios to nginx and to the best peer --

TLS_METRICS = [
    ("rps", "hs/s", "higher", lambda v: f"{v:,.0f}/s"),
    ("cpu_us_per_hs", "CPU/handshake", "lower", lambda v: f"{v:.0f} µs"),
    ("p50_us", "p50", "lower", _ms),
    ("p99_us", "p99", "lower", _ms),
]


def tls_ratios(results):
    """{name: {metric: {vs_nginx, nginx_value, vs_best, best, best_value}}} for one kind."""
    out = {}
    for key, _label, better, _fmt in TLS_METRICS:
        bname, bval = best_peer(results, key, better)
        ng = results.get("nginx", {})
        nval = ng.get(key) if _clean(ng) else None
        for name, r in results.items():
            if r.get("status") != "ok" or r.get(key) is None:
                continue
            x = {}
            if nval:
                x.update(vs_nginx=round(r[key] / nval, 3), nginx_value=nval)
            if bval:
                x.update(vs_best=round(r[key] / bval, 3), best=bname, best_value=bval)
            if x:
                out.setdefault(name, {})[key] = x
    return out


def _tls_rows(results, rat):
    headers = ["proxy", "hs/s", "CPU/hs", "×nginx", "×best", "hs/s/core", "proxy CPU",
               "busy c0/c1", "p50", "p99", "resumed", "tix/conn", "errors"]
    rows = []
    for name, r in results.items():
        if r.get("status") != "ok":
            rows.append(_status_row(name, r))
            continue
        x = rat.get(name, {}).get("cpu_us_per_hs", {})
        err = _errors(r)
        rate = r.get("resumption_rate")
        rows.append([
            name, _num(r.get("rps"), "{:,.0f}"), _num(r.get("cpu_us_per_hs"), "{:.0f} µs"),
            f"{x['vs_nginx']:.2f}×" if "vs_nginx" in x else "-",
            f"{x['vs_best']:.2f}×" if "vs_best" in x else "-",
            _num(r.get("hs_per_core_s"), "{:,.0f}"), _num(r.get("proxy_cpu_pct"), "{:.0f}%"),
            _busy(r), _ms(r.get("p50_us")), _ms(r.get("p99_us")),
            "-" if rate is None else f"{rate * 100:.1f}%",
            _num(r.get("tickets_per_conn"), "{:.1f}"), f"{err:,}" + (" !" if err else ""),
        ])
    return _table(headers, rows)


def render_tls(title, results, kind_titles):
    """Text of the `tls` scenario (results: {kind: {proxy: row}}) and its ratios
    ({kind: {proxy: {metric: ...}}})."""
    out = [f"== {title} =="]
    all_rat = {}
    for kind, rows in results.items():
        rat = tls_ratios(rows)
        all_rat[kind] = rat
        out.append(f"-- {kind}: {kind_titles.get(kind, kind)}")
        out.append(_tls_rows(rows, rat))
        for name, r in rows.items():
            if name in PEERS:
                continue
            if r.get("status") != "ok":
                note = f" ({r['note']})" if r.get("note") and r.get("status") != "failed" else ""
                out.append(f"  {name}: {r.get('status')}{note} - no ratios")
                continue
            if not _clean(r):
                out.append(f"  WARNING: {name} had {_errors(r):,} failed connections; its speed "
                           "is not comparable")
            for key, label, better, fmt in TLS_METRICS[:2]:
                x = rat.get(name, {}).get(key)
                if not x:
                    continue
                parts = []
                if "vs_nginx" in x:
                    parts.append(f"{x['vs_nginx']:.2f}× nginx ({fmt(x['nginx_value'])})")
                if "vs_best" in x:
                    parts.append(f"{x['vs_best']:.2f}× best ({x['best']} {fmt(x['best_value'])})")
                out.append(f"  {name} {label} = {', '.join(parts)}   [{better} is better]")
        for name, r in rows.items():
            out += [f"  note: {name}: {w}" for w in r.get("warnings", ())]
    out.append("  hs/s/core = handshakes per second of proxy CPU time (1 / CPU per handshake): "
               "what one saturated core would do; when the load-generator core is the limit "
               "(busy c1 ~100%), compare this and CPU/hs rather than hs/s.")
    return "\n".join(out), all_rat
