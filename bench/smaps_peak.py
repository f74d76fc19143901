#!/usr/bin/env python3
"""Where a worker's memory is: samples /proc/PID/smaps of every process named copysink every
0.25 s until STOP_FILE exists, and keeps, per process, the sample with the highest total Rss
and its largest mappings (size and Rss in KB, and the name: [heap] is glibc's main arena,
a 64 MB [anon] mapping one of its thread arenas, other large [anon] ones single mmap'ed
allocations).

    bench/smaps_peak.py OUT.json STOP_FILE      (beside a bench/run.sh of the same machine)

It reads what the kernel reports and does not slow the worker down beyond a read of smaps."""
import json
import os
import re
import sys
import time

MAP_RE = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def workers():
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/comm") as f:
                    if f.read().strip() == "copysink":
                        yield int(p)
            except OSError:
                pass


def sample(pid):
    """[(size_kb, rss_kb, name)] of the process's mappings, or None when it has gone."""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            text = f.read()
    except OSError:
        return None
    maps, cur = [], None
    for line in text.splitlines():
        if MAP_RE.match(line):
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            cur = [(hi - lo) // 1024, 0, parts[5] if len(parts) > 5 else "[anon]"]
            maps.append(cur)
        elif line.startswith("Rss:") and cur is not None:
            cur[1] = int(line.split()[1])
    return maps


def main():
    out, stop = sys.argv[1], sys.argv[2]
    best = {}  # pid -> {"rss_kb", "at", "largest"}
    while not os.path.exists(stop):
        for pid in workers():
            maps = sample(pid)
            if not maps:
                continue
            total = sum(m[1] for m in maps)
            if total > best.get(pid, {}).get("rss_kb", 0):
                best[pid] = {"rss_kb": total, "at": time.strftime("%H:%M:%S", time.gmtime()),
                             "largest": sorted(maps, key=lambda m: -m[1])[:25]}
                with open(out + ".tmp", "w") as f:
                    json.dump({str(k): v for k, v in best.items()}, f, indent=1)
                os.replace(out + ".tmp", out)
        time.sleep(0.25)


if __name__ == "__main__":
    main()
