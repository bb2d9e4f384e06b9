"""sluice bench: CPU time and memory of a process tree, from /proc (Linux only, stdlib only).

A proxy under test is measured as a whole: the process run.sh started plus every descendant
(nginx's master and worker, h2o's neverbleed helper, ...) and every thread of each. CPU time is
utime + stime from /proc/PID/stat (all threads), plus cutime + cstime (children that exited and
were reaped during the window). Memory is summed over the tree: VmRSS and VmHWM from
/proc/PID/status, Pss from /proc/PID/smaps_rollup (which splits shared pages fairly, so nginx's
master + worker are not double-counted there).
"""

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split at the last ')'.
    return data[data.rindex(")") + 2:].split()


def tree(root):
    """root plus all of its live descendants, root first."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(name)
        if f is None:
            continue
        children.setdefault(int(f[1]), []).append(int(name))  # f[1] is ppid
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat_fields(pid) is None:
            continue
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(root):
    """CPU seconds (user + system, all threads, reaped children included) of root's tree."""
    ticks = 0
    for pid in tree(root):
        f = _stat_fields(pid)
        if f is None:
            continue
        # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def _status_kb(pid, keys):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def _pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(root):
    """Memory of root's tree in KiB: rss, hwm (sum of per-process peaks), pss; and counts."""
    rss = hwm = pss = threads = 0
    pids = tree(root)
    for pid in pids:
        st = _status_kb(pid, ("VmRSS", "VmHWM", "Threads"))
        rss += st.get("VmRSS", 0)
        hwm += st.get("VmHWM", 0)
        threads += st.get("Threads", 0)
        pss += _pss_kb(pid)
    return {"rss_kb": rss, "hwm_kb": hwm, "pss_kb": pss, "processes": len(pids), "threads": threads}


def cpu_core_ticks():
    """Per-core tick counters from /proc/stat: {core: {user, nice, system, idle, ...}}."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                parts = line.split()
                out[int(parts[0][3:])] = dict(zip(names, map(int, parts[1:9])))
    return out


def core_usage(before, after, core, own_cpu_s, wall_s):
    """How core `core` was used between two cpu_core_ticks() samples, in % of wall time:
    busy (everything but idle/iowait), `own` = the CPU seconds of the processes we put there
    (own_cpu_s), softirq, and `other` = user + system time not accounted to them (noise).
    Per-task and per-core accounting differ a little (softirq time may land in either), so
    small values of `other` mean nothing."""
    if core not in before or core not in after or wall_s <= 0:
        return None
    d = {k: (after[core][k] - before[core][k]) / CLK_TCK for k in after[core]}
    pct = lambda s: round(100.0 * s / wall_s, 1)
    busy = sum(v for k, v in d.items() if k not in ("idle", "iowait"))
    task = d["user"] + d["nice"] + d["system"]
    return {
        "busy_pct": pct(busy),
        "own_pct": pct(own_cpu_s),
        "softirq_pct": pct(d["softirq"] + d["irq"]),
        "other_pct": pct(max(0.0, task - own_cpu_s)),
    }
