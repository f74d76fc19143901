"""copysink end to end: a worker started with a fresh consumer group on a topic produced
beforehand, the clock from starting the process to the moment the stored offsets in
copysink_offsets equal the topic's end offsets (polled every 10 ms), its peak RSS and the CPU
of the worker, the broker and the PostgreSQL cluster read while it still runs, and what its log
says (the effective bounds, how many writers it used, its batches)."""
import os
import re
import signal
import subprocess
import tempfile
import time
import uuid

import cpu
import kafkaside
import pgside

START_RE = re.compile(r'msg="copysink (\S+) (?:replay )?started: \d+ table\(s\), '
                      r'max_rows=(\d+) max_bytes=(\d+) linger_ms=(\d+)')
WRITERS_RE = re.compile(r"\bwriters=(\w+)")


class Target:
    """One server and the broker, as every copysink run of it needs them."""

    def __init__(self, bin_path, kafka, conninfo, conn, out, broker_pid, overrides):
        self.bin, self.kafka, self.conninfo, self.conn, self.out = \
            bin_path, kafka, conninfo, conn, out
        self.broker_pid = broker_pid
        self.postmaster_pid = pgside.postmaster_pid(conn)
        self.own_backend = pgside.one(conn, "SELECT pg_backend_pid()")
        self.overrides = overrides  # {section: {key: value}} from the command line, or {}

    def meter(self):
        """Broker and cluster CPU, less the harness's polling backend."""
        return cpu.Meter(self.broker_pid, self.postmaster_pid, exclude=(self.own_backend,))


def config_text(t, topic, group, settings):
    """The worker's configuration: only what a run needs (brokers, group, conninfo, table,
    topic, the metrics endpoint off), the command line's overrides and the run's settings;
    everything else at the worker's defaults. A "defaults" run passes no settings, so that
    it takes whatever the worker's default writers, bounds and switches are."""
    sections = {"kafka": {"bootstrap.servers": t.kafka, "group.id": group},
                "postgres": {"conninfo": t.conninfo},
                "batch": {}, "worker": {}, "http": {"listen": ""}}
    for src in (t.overrides, settings or {}):
        for sec, kv in src.items():
            sections.setdefault(sec, {}).update(kv)
    lines = []
    for sec, kv in sections.items():
        if kv:
            lines.append(f"[{sec}]")
            lines += [f"{k} = {v}" for k, v in kv.items()]
            lines.append("")
    lines += ["[table memory_entries]", f"topic = {topic}", "on_conflict = update", ""]
    return "\n".join(lines)


def read_log(path):
    """What a worker's log says: the start line's bounds, the writers it used and where that
    was read, and its batches ("batch committed" lines)."""
    info = {"version": None, "max_rows": None, "max_bytes": None, "linger_ms": None,
            "writers": "default", "writers_source": "unknown"}
    rows, ms, lanes, any_batch, lane_field = [], [], set(), False, False
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = START_RE.search(line)
                if m:
                    info.update(version=m.group(1), max_rows=int(m.group(2)),
                                max_bytes=int(m.group(3)), linger_ms=int(m.group(4)))
                    w = WRITERS_RE.search(line)
                    if w and w.group(1).isdigit():
                        info.update(writers=int(w.group(1)), writers_source="start line")
                elif 'msg="batch committed"' in line:
                    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                    any_batch = True
                    rows.append(int(fields["rows"]))
                    ms.append(int(fields["ms"]))
                    if "writer" in fields:
                        lane_field = True
                        lanes.add(fields["writer"])
    except OSError:
        pass
    if info["writers_source"] == "unknown" and any_batch:
        if lane_field:
            info.update(writers=len(lanes),
                        writers_source="batch lines (distinct writer= fields)")
        else:
            info.update(writers=1, writers_source="batch lines (no writer= field: one writer)")
    if rows:
        rs, mss = sorted(rows), sorted(ms)
        info["batches"] = {"n": len(rows), "rows_p50": rs[len(rs) // 2], "rows_max": rs[-1],
                           "ms_p50": mss[len(mss) // 2], "ms_p99": mss[int(len(mss) * 0.99)],
                           "ms_max": mss[-1], "writer_ms": sum(ms), "rows": sum(rows)}
    return info


def connections(run):
    """How many connections the baseline paired with this run gets: the writers the worker
    used, 1 when that is not known (recorded with the run)."""
    return run["writers"] if isinstance(run["writers"], int) else 1


def wait_for(cond, deadline, what, proc=None, log_name=None):
    """Poll cond() every 10 ms until it holds; fail at the deadline or if proc exits."""
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"copysink exited with {proc.returncode} while waiting for "
                               f"{what}, see {log_name}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}" +
                               (f", see {log_name}" if log_name else ""))
        time.sleep(0.01)


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def start_worker(t, topic, group, settings, log_name):
    """Start a worker; returns (process, its log file, its config file)."""
    cfg = tempfile.NamedTemporaryFile("w", suffix=".ini")
    cfg.write(config_text(t, topic, group, settings))
    cfg.flush()
    logf = open(os.path.join(t.out, log_name), "wb")
    proc = subprocess.Popen([t.bin, "run", "-c", cfg.name], stdout=logf, stderr=logf)
    return proc, logf, cfg


def stop_worker(proc, logf, cfg):
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        logf.close()
        cfg.close()


def figures(t, proc, rows, seconds, meter_cpu, log_name, settings):
    """A run's record, read while the worker still runs."""
    worker_s = cpu.process_s(proc.pid)
    rec = {"seconds": seconds, "rows": rows, "rows_per_s": rows / seconds,
           "peak_rss_kb": peak_rss_kb(proc.pid),
           "cpu_s": {"worker": worker_s, **meter_cpu}, "log": log_name,
           "settings": settings or {}}
    rec["cpu_per_100k_s"] = {k: cpu.per_100k(v, rows) for k, v in rec["cpu_s"].items()}
    return rec


def run(t, topic, log_name, settings=None, timeout=600, profile=None):
    """One end-to-end run on a topic produced beforehand, into the table as the caller left
    it. Returns the run's record (see figures() and read_log())."""
    group = "bench-" + uuid.uuid4().hex[:8]
    ends = kafkaside.end_offsets(t.kafka, topic)
    rows = sum(ends.values())
    perf = None
    if profile:  # the whole machine: copysink, PostgreSQL and the broker share it
        perf = subprocess.Popen(["perf", "record", "-a", "-F", "999", "-o", profile],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(profile) and os.path.getsize(profile) > 0,
                 time.monotonic() + 30, "perf record to start")
    meter = t.meter().start()
    t0 = time.perf_counter()
    proc, logf, cfg = start_worker(t, topic, group, settings, log_name)
    try:
        wait_for(lambda: pgside.stored(t.conn, group) == ends, time.monotonic() + timeout,
                 f"the offsets of {topic} stored", proc, log_name)
        dt = time.perf_counter() - t0
        rec = figures(t, proc, rows, dt, meter.stop(), log_name, settings)
    finally:
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        stop_worker(proc, logf, cfg)
    rec.update(read_log(os.path.join(t.out, log_name)))
    return rec
