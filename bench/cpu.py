"""CPU seconds (user + system) of the processes a run involves, from /proc/PID/stat.

A PostgreSQL cluster is its postmaster and the postmaster's children. Its CPU at a moment is
the postmaster's own time, the time of the children it has reaped (cutime + cstime: a backend
that exited and was waited for adds its whole time there) and the time of every child alive
now. The difference of two such snapshots is the cluster's CPU between them: a process alive
at both counts by difference, one started in between counts fully, one that started or was
alive and exited in between is counted through the postmaster's reaped time. The same holds
for any process with children (the broker's JVM has none that matter)."""
import os

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    """(ppid, utime + stime, cutime + cstime, starttime) in clock ticks, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()  # rest[k] is field k + 3 of proc(5)
    return (int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14]),
            int(rest[19]))


def process_s(pid):
    """User + system CPU seconds of one process (all its threads), or None if it is gone."""
    st = _stat(pid)
    return None if st is None else st[1] / TICK


def _children(ppid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[0] == ppid:
                out.append(int(name))
    return out


def tree_s(pid):
    """CPU seconds of a process, the children it reaped and its children alive now (one
    level: PostgreSQL's backends and auxiliary processes), or None if it is gone."""
    st = _stat(pid)
    if st is None:
        return None
    total = st[1] + st[2]
    for c in _children(pid):
        cst = _stat(c)
        if cst is not None:
            total += cst[1]
    return total / TICK


def read_pid_file(path):
    """The pid in a pid file (kafka.sh's DIR/kafka.pid), or None."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Meter:
    """CPU of the broker and of a PostgreSQL cluster between start() and stop(), less the
    CPU of the harness's own backends named in `exclude` (their pids), which poll."""

    def __init__(self, broker_pid, postmaster_pid, exclude=()):
        self.broker_pid, self.postmaster_pid, self.exclude = broker_pid, postmaster_pid, exclude

    def _snap(self):
        broker = process_s(self.broker_pid) if self.broker_pid else None
        pg = tree_s(self.postmaster_pid) if self.postmaster_pid else None
        ex = sum(process_s(p) or 0.0 for p in self.exclude)
        return broker, pg, ex

    def start(self):
        self.t0 = self._snap()
        return self

    def stop(self):
        """{"broker": s, "postgres": s}, None where the process was not known or is gone."""
        b1, p1, e1 = self._snap()
        b0, p0, e0 = self.t0
        return {"broker": None if b0 is None or b1 is None else round(b1 - b0, 3),
                "postgres": None if p0 is None or p1 is None else
                round((p1 - p0) - (e1 - e0), 3)}


def per_100k(seconds, rows):
    return None if seconds is None or not rows else seconds * 100000 / rows
