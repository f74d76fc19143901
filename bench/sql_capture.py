#!/usr/bin/env python3
"""The statements copysink sends per batch, as the server logged them (bench/sql_variants.py reads
the result).

Runs the worker (the build's `copysink run`) on the benchmark's rows twice: new keys, then the
same keys with every value changed, each from its own topic with its own group. Its connection
sets log_min_duration_statement = 0 (conninfo options), so the server logs every statement of
that connection with its duration and nothing else's. Groups the statements into transactions
(BEGIN ... COMMIT) and counts, per batch, the statements and the client round trips: one per
simple query, one per PQexecParams (parse/bind/execute in one message), two per COPY (the COPY
command until the server's CopyInResponse, then the data until its CommandComplete). Keeps the
exact text of the merge and offsets statements, so sql_variants.py can check that it measures
the same SQL.

Needs a Kafka broker (--kafka) and the PostgreSQL server's log file (--server-log).
Writes --out (bench/results/sql_capture.json by default; the results hold one per server,
sql_capture_pg15.json and sql_capture_pg16.json, which bench/sql_variants.py reads).

    V=$(scripts/venv.sh); $V/bin/python bench/sql_capture.py --bin BUILD/copysink \
        --pg 'host=127.0.0.1 port=55900 user=postgres dbname=postgres' \
        --server-log /tmp/sql-pg/server.log --kafka 127.0.0.1:55920
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import bench

HERE = os.path.dirname(os.path.abspath(__file__))
LINE = re.compile(r"^(\S+ \S+) \S+ \[(\d+)\] LOG:  duration: ([\d.]+) ms  (.*)$")
FAILED = re.compile(r"^(\S+ \S+) \S+ \[(\d+)\] STATEMENT:  (.*)$")


def run_worker(args, topic, n):
    """Run copysink on `topic` until its stored offsets reach the topic's end; @returns the
    worker's log lines."""
    group = "sqlcap-" + uuid.uuid4().hex[:8]
    conninfo = args.pg + " options='-c log_min_duration_statement=0'"
    ends = bench.end_offsets(args.kafka, topic)
    conn = bench.connect(args.pg)
    with tempfile.NamedTemporaryFile("w", suffix=".ini") as cfg, \
            tempfile.TemporaryFile("w+") as out:
        cfg.write(f"""[kafka]
bootstrap.servers = {args.kafka}
group.id = {group}
[postgres]
conninfo = {conninfo}
[batch]
max_bytes = {args.max_bytes}
[worker]
stats_interval_s = 60
[http]
listen =
[table memory_entries]
topic = {topic}
on_conflict = update
""")
        cfg.flush()
        p = subprocess.Popen([args.bin, "run", "-c", cfg.name], stderr=out)
        deadline = time.time() + 300
        while bench.stored(conn, group) != ends:
            if p.poll() is not None or time.time() > deadline:
                p.kill()
                raise RuntimeError("the worker stopped or did not finish")
            time.sleep(0.2)
        p.terminate()
        p.wait(60)
        out.seek(0)
        lines = out.read().splitlines()
    conn.close()
    return lines


def statement_kind(text):
    """A short name for a logged statement."""
    s = re.sub(r"^(statement|execute <unnamed>|parse <unnamed>|bind <unnamed>): ", "", text)
    for prefix, name in (("BEGIN", "BEGIN"), ("COMMIT", "COMMIT"), ("SAVEPOINT", "SAVEPOINT"),
                         ("RELEASE", "RELEASE SAVEPOINT"), ("ROLLBACK TO", "ROLLBACK TO"),
                         ("ROLLBACK", "ROLLBACK"), ("DELETE", "DELETE"),
                         ("WITH v AS", "offsets")):
        if s.startswith(prefix):
            return name
    if s.startswith("COPY pg_temp."):
        return "COPY staging"
    if s.startswith("COPY "):
        return "COPY direct"
    if s.startswith("INSERT INTO") and "NOT copysink_collapsed" in s:
        return "merge"
    if s.startswith("INSERT INTO"):
        return "merge collapsed"
    return s[:40]


def stamp(text):
    """Seconds of a log line's timestamp (milliseconds resolution)."""
    t = time.strptime(text[:19], "%Y-%m-%d %H:%M:%S")
    return time.mktime(t) + float(text[19:])


def transactions(log_lines):
    """[[(kind, ms, text, protocol step, end time)], ...] of every BEGIN ... COMMIT. A statement
    that failed (logged as ERROR, then STATEMENT) has no duration: its ms is the time from the
    end of the statement before it to the error."""
    out, cur = [], None
    for line in log_lines:
        m = LINE.match(line)
        f = FAILED.match(line) if not m else None
        if m:
            ts, text = stamp(m.group(1)), m.group(4)
            ms, step = float(m.group(3)), text.split(" ", 1)[0]
            kind = statement_kind(text)
        elif f and cur:
            ts, text, step = stamp(f.group(1)), "statement: " + f.group(3), "failed"
            kind = statement_kind(text) + " (failed)"
            ms = (ts - cur[-1][4]) * 1000
        else:
            continue
        if kind == "BEGIN":
            cur = []
        if cur is None:
            continue
        cur.append((kind, ms, text, step, ts))
        if kind in ("COMMIT", "ROLLBACK"):
            out.append(cur)
            cur = None
    return out


def summarize(txs, worker_log):
    """Per distinct statement sequence: how many batches, statements and round trips each,
    and the median server milliseconds of each statement."""
    shapes = {}
    for tx in txs:
        kinds = [k for k, _, _, step, _ in tx if step != "parse" and step != "bind"]
        key = " / ".join(kinds)
        s = shapes.setdefault(key, {"sequence": kinds, "batches": 0, "ms": {}})
        s["batches"] += 1
        for k, ms, _, _, _ in tx:  # parse + bind + execute of the offsets: one statement
            s["ms"].setdefault(k, []).append(ms)
        # BEGIN's start to COMMIT's end, as the server saw it
        s.setdefault("span", []).append((tx[-1][4] - tx[0][4]) * 1000 + tx[0][1])
    for s in shapes.values():
        seq = s["sequence"]
        s["statements"] = len(seq)
        s["round_trips"] = len(seq) + sum(1 for k in seq if k.startswith("COPY"))
        # the offsets' three log lines (parse, bind, execute) summed per batch
        per = {}
        for k, v in s["ms"].items():
            m = seq.count(k) if k != "offsets" else 1
            groups = [sum(v[i:i + (3 if k == "offsets" else 1)])
                      for i in range(0, len(v), 3 if k == "offsets" else 1)]
            per[k] = statistics.median(groups) * m
        s["median_ms"] = per
        s["span_ms_median"] = statistics.median(s.pop("span"))
        del s["ms"]
    rows = [int(f["rows"]) for f in (dict(kv.split("=", 1) for kv in l.split() if "=" in kv)
                                      for l in worker_log if 'msg="batch committed"' in l)
            if "rows" in f]
    ms = [int(f["ms"]) for f in (dict(kv.split("=", 1) for kv in l.split() if "=" in kv)
                                  for l in worker_log if 'msg="batch committed"' in l)
          if "ms" in f]
    return {"shapes": sorted(shapes.values(), key=lambda s: -s["batches"]),
            "batch_rows_median": statistics.median(rows) if rows else None,
            "batch_ms_median": statistics.median(ms) if ms else None}


def texts(txs):
    """The exact text of each kind of statement (the first one logged)."""
    out = {}
    for tx in txs:
        for k, _, text, step, _ in tx:
            if step in ("statement:", "execute", "failed") and k not in out:
                out[k] = re.sub(r"^(statement|execute <unnamed>): ", "", text)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--pg", required=True)
    ap.add_argument("--server-log", required=True)
    ap.add_argument("--kafka", required=True)
    ap.add_argument("--entries", type=int, default=40_000)
    ap.add_argument("--max-bytes", type=int, default=33554432)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "sql_capture.json"))
    args = ap.parse_args()

    conn = bench.connect(args.pg)
    with conn.cursor() as cur:
        cur.execute("TRUNCATE memory_entries")
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
    kind = bench.embedding_kind(conn)
    pool = bench.embedding_pool(1)
    run_id = uuid.uuid4().hex[:6]
    res = {"postgres": version, "embedding_type": kind, "entries": args.entries,
           "max_bytes": args.max_bytes, "cases": {}}
    for case, version_ in (("new", 1), ("update", 2)):
        topic = f"sqlcap.{run_id}.{case}"
        bench.create_topic(args.kafka, topic)
        bench.produce(args.kafka, topic, bench.make_entries(args.entries, 1, version_, pool))
        start = os.path.getsize(args.server_log)
        worker_log = run_worker(args, topic, args.entries)
        time.sleep(0.5)
        with open(args.server_log, errors="replace") as f:
            f.seek(start)
            txs = transactions(f.read().splitlines())
        res["cases"][case] = summarize(txs, worker_log)
        res["cases"][case]["texts"] = texts(txs)
        bench.log(f"{case}: {len(txs)} transactions")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({c: [(s["batches"], s["round_trips"], s["sequence"]) for s in v["shapes"]]
                      for c, v in res["cases"].items()}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
