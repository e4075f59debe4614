#!/usr/bin/env python3
"""Shared-weights proof: for a running mmembed master, report how much of the
weight pack each process maps (Rss) and is charged for (Pss), from
/proc/<pid>/smaps and smaps_rollup. N workers holding one physical copy shows
as: each worker's weight Rss ~= pack size, while the Pss of the pack summed
over master + workers ~= pack size (not N times it).

Usage: tools/pss_report.py MASTER_PID [--json]"""
import json
import os
import sys

MARK = "memfd:mmembed-weights"   # the pack built at start; or a pack cache file (*.pack)


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open(f"/proc/{d}/stat").read()
                if int(st.rsplit(")", 1)[1].split()[1]) == ppid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return sorted(out)


def weights_kb(pid):
    """(size, rss, pss) in kB over the weight-pack mappings of pid."""
    size = rss = pss = 0
    cur = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                cur = MARK in line or line.rstrip().endswith(".pack")
                continue
            if cur and parts[0] == "Size:":
                size += int(parts[1])
            elif cur and parts[0] == "Rss:":
                rss += int(parts[1])
            elif cur and parts[0] == "Pss:":
                pss += int(parts[1])
    return size, rss, pss


def rollup_kb(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            p = line.split()
            if len(p) >= 2 and p[0].endswith(":") and p[1].isdigit():
                out[p[0][:-1]] = int(p[1])
    return out


def report(master, workers=None):
    """workers: the worker pids (from /status); other children of the master
    (the overflow process) are listed as "other"."""
    kids = children(master)
    procs = [("master", master)] + [("worker" if workers is None or p in workers else "other", p) for p in kids]
    rows = []
    for role, pid in procs:
        size, rss, pss = weights_kb(pid)
        r = rollup_kb(pid)
        rows.append({"role": role, "pid": pid, "weights_size_kb": size, "weights_rss_kb": rss, "weights_pss_kb": pss,
                     "pss_kb": r.get("Pss", 0), "rss_kb": r.get("Rss", 0),
                     "private_kb": r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)})
    pack = max(r["weights_size_kb"] for r in rows)
    workers = [r for r in rows if r["role"] == "worker"]
    return {
        "pack_kb": pack,
        "workers": len(workers),
        "weights_pss_sum_kb": sum(r["weights_pss_kb"] for r in rows),
        "worker_pss_sum_kb": sum(r["pss_kb"] for r in workers),
        "worker_private_max_kb": max((r["private_kb"] for r in workers), default=0),
        "processes": rows,
    }


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    rep = report(int(sys.argv[1]))
    if "--json" in sys.argv:
        print(json.dumps(rep, indent=1))
        return
    print(f"weight pack: {rep['pack_kb'] / 1024:.1f} MiB, {rep['workers']} workers")
    print(f"{'role':7} {'pid':>7} {'w.Rss MiB':>10} {'w.Pss MiB':>10} {'Pss MiB':>9} {'private MiB':>12}")
    for r in rep["processes"]:
        print(f"{r['role']:7} {r['pid']:>7} {r['weights_rss_kb'] / 1024:>10.1f} {r['weights_pss_kb'] / 1024:>10.1f} "
              f"{r['pss_kb'] / 1024:>9.1f} {r['private_kb'] / 1024:>12.1f}")
    print(f"sum of weight Pss over all processes: {rep['weights_pss_sum_kb'] / 1024:.1f} MiB (one copy = "
          f"{rep['pack_kb'] / 1024:.1f} MiB)")
    print(f"sum of worker Pss: {rep['worker_pss_sum_kb'] / 1024:.1f} MiB <= pack + {rep['workers']} x max private "
          f"= {(rep['pack_kb'] + rep['workers'] * rep['worker_private_max_kb']) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
