#!/usr/bin/env python3
"""Where copysink's own CPU goes per row on the write path, in instructions (callgrind).

The benchmark's memory entries (bench.py make_entries / to_msgpack, lz4-compressed) are produced
once to two topics: new keys, and the same keys with every value changed. Each measurement runs
`valgrind --tool=callgrind copysink run` with a fresh group until the offsets stored in
copysink_offsets reach the topic's end, then SIGTERM, and splits the instructions of the whole
process (every thread; the kernel's are not counted) into librdkafka, msgpack-c, our decoding,
our COPY encoding, the batch, libpq, logging and the rest. A library's helpers (libc's memcpy,
malloc, ...) are charged to whoever called them.

    bench/profile_cpu.py run --label baseline          measure (and keep the callgrind files)
    bench/profile_cpu.py report                        write bench/results/cpu_profile.md again

Servers: --pg15 (embedding real[]) and --pg16 (PostgreSQL 16 with pgvector: vector(384)),
--kafka; each measurement uses a database "cpuprof" that it creates and migrates. The figures
of every label are kept in bench/results/cpu_profile.json; the ideas tried (which label is
before and after which change) are listed in bench/cpu_ideas.json, and the report renders both.
Instruction counts do not depend on the machine's load; batch bounds are set so that every run
writes the same batches (max_rows 5000, no linger, no write-when-idle).
"""
import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (make_entries, to_msgpack, produce, create_topic, end_offsets)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
JSON_PATH = os.path.join(RESULTS, "cpu_profile.json")
MD_PATH = os.path.join(RESULTS, "cpu_profile.md")
IDEAS_PATH = os.path.join(ROOT, "bench", "cpu_ideas.json")
DB = "cpuprof"
MAX_ROWS = 5000

CATEGORIES = [
    ("lz4", "librdkafka: lz4 decompression"),
    ("rdkafka", "librdkafka: fetch, protocol, queues"),
    ("msgpack", "unpack into the zone (msgpack-c; unpack.c once it replaced it)"),
    ("decode", "ours: decode and validation (decode.c)"),
    ("encode", "ours: COPY encoding (decode.c encoders, embedding.c, pgbinary.c, numtext.c, "
               "writer.c)"),
    ("batch", "ours: batch (message copy, key dedup; batch.c)"),
    ("libpq", "libpq: send"),
    ("log", "logging and metrics (log.c, stats.c, http.c)"),
    ("other", "other (loop, consumer, start-up, shutdown)"),
]
# decode.c functions that encode (the rest of decode.c is decoding and validation)
ENCODERS = re.compile(r"^(put_|json_|encode_tuple)")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- callgrind files


def parse_callgrind(path):
    """Self cost per function and the inclusive cost of each call edge, from a callgrind out
    file (name compression, cob/cfi/cfn, calls= lines). Functions are keyed (object, name);
    `files` gives the source file of each (from its fn= line: a cfn= line's file may be the
    caller's)."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    kind_of = {"ob": "ob", "cob": "ob", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl",
               "cfl": "fl", "fn": "fn", "cfn": "fn"}
    self_cost = collections.Counter()
    edges = collections.Counter()  # (caller, callee) -> inclusive Ir
    files = {}
    ob = fl = fn = None
    cob = cfn = None
    pending_call = False

    def name(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
            return m.group(2)
        return names[kind][m.group(1)]

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                if pending_call:
                    edges[((ob, fn), (cob or ob, cfn))] += ir
                    pending_call = False
                else:
                    self_cost[(ob, fn)] += ir
                continue
            key, _, value = line.partition("=")
            if key not in kind_of and key != "calls":
                continue
            if key == "calls":
                pending_call = True
                continue
            v = name(kind_of[key], value)
            if key == "ob":
                ob = v
            elif key in ("fl", "fi", "fe"):
                if key == "fl":
                    fl = v
            elif key == "fn":
                fn = v
                files.setdefault((ob, fn), fl)
                cob = None
            elif key == "cob":
                cob = v
            elif key == "cfn":
                cfn = v
    return self_cost, edges, files


def category(func, file):
    """The category of a function, or None for a helper charged to its callers."""
    ob, fn = func
    ob = os.path.basename(ob or "")
    file = os.path.basename(file or "")
    if ob.startswith("liblz4") or fn.startswith(("LZ4", "XXH")):
        return "lz4"
    if ob.startswith("librdkafka"):
        return "rdkafka"
    if ob.startswith("libmsgpack"):
        return "msgpack"
    if ob.startswith(("libpq", "libssl", "libcrypto", "libgssapi", "libldap")):
        return "libpq"
    if ob.startswith(("libmicrohttpd", "libjansson")):
        return "log"
    if ob.startswith("copysink"):
        if file == "decode.c":
            return "encode" if ENCODERS.match(fn) else "decode"
        if file in ("embedding.c", "pgbinary.c", "numtext.c", "writer.c"):
            return "encode"
        if file == "unpack.c":
            return "msgpack"
        if file == "batch.c":
            return "batch"
        if file in ("log.c", "stats.c", "http.c"):
            return "log"
        if file == "buf.c":
            return None
        return "other"
    return None  # libc, libm, the dynamic linker, valgrind's malloc: charged to the caller


def split(path):
    """Instructions per category (helpers charged to their callers in proportion to the calls'
    costs) and the total."""
    self_cost, edges, files = parse_callgrind(path)
    callers = collections.defaultdict(list)
    for (a, b), ir in edges.items():
        if a != b:
            callers[b].append((a, ir))
    funcs = set(self_cost) | {a for a, _ in edges} | {b for _, b in edges}
    share = {}
    for fn in funcs:
        cat = category(fn, files.get(fn))
        share[fn] = {cat: 1.0} if cat else {"other": 1.0}
    helpers = [fn for fn in funcs if category(fn, files.get(fn)) is None]
    for _ in range(60):  # helpers calling helpers: iterate to a fixed point
        changed = False
        for fn in helpers:
            total = sum(ir for _, ir in callers[fn])
            if total == 0:
                continue
            new = collections.Counter()
            for caller, ir in callers[fn]:
                for cat, s in share[caller].items():
                    new[cat] += s * ir / total
            if any(abs(new[k] - share[fn].get(k, 0)) > 1e-9 for k in set(new) | set(share[fn])):
                changed = True
            share[fn] = dict(new)
        if not changed:
            break
    out = collections.Counter()
    for fn, ir in self_cost.items():
        for cat, s in share[fn].items():
            out[cat] += ir * s
    return {k: round(v) for k, v in out.items()}, sum(self_cost.values())


def annotate(path, inclusive, n=15):
    """The top functions of callgrind_annotate (inclusive or self) as (Ir, function) pairs."""
    out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
                          "--threshold=100", path], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$", line)
        if m and "PROGRAM TOTALS" not in line and "file:function" not in line:
            rows.append((int(m.group(1).replace(",", "")), m.group(2)))
        if len(rows) >= n:
            break
    return rows


# ---------------------------------------------------------------- servers


def conninfo_db(conninfo, db):
    parts = [p for p in conninfo.split() if not p.startswith("dbname=")]
    return " ".join(parts + [f"dbname={db}"])


def prepare_db(admin_conninfo, copysink, vector):
    """Create and migrate the database "cpuprof" (vector: CREATE EXTENSION vector first, so the
    embedding column is vector(384)); returns its conninfo."""
    conn = psycopg2.connect(admin_conninfo)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE DATABASE {DB}")
    conn.close()
    ci = conninfo_db(admin_conninfo, DB)
    if vector:
        conn = psycopg2.connect(ci)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.close()
    subprocess.run([copysink, "migrate", "-c", "/dev/stdin"],
                   input=f"[postgres]\nconninfo = {ci}\n[table memory_entries]\n".encode(),
                   check=True, capture_output=True)
    conn = bench.connect(ci)
    kind = bench.embedding_kind(conn)
    conn.close()
    if kind != ("vector" if vector else "real[]"):
        raise RuntimeError(f"memory_entries.embedding is {kind} in {ci}")
    return ci


def topics(kafka, n):
    """The two topics of n entries (new keys, then the same keys updated), produced once: a topic
    that already holds n messages is used as it is."""
    names = {"new": f"cpuprof.{n}.new", "update": f"cpuprof.{n}.upd"}
    pool = bench.embedding_pool(1)
    for path, version in (("new", 1), ("update", 2)):
        t = names[path]
        try:
            have = sum(bench.end_offsets(kafka, t).values())
        except Exception:  # noqa: BLE001 (no such topic yet)
            have = 0
        if have == n:
            continue
        if have != 0:
            raise RuntimeError(f"topic {t} holds {have} messages, not {n}: delete it")
        log(f"producing {n} entries to {t}")
        bench.create_topic(kafka, t)
        bench.produce(kafka, t, bench.make_entries(n, 1, version, pool))
    return names


def config(path, conninfo, kafka, topic, group, direct):
    path.write(f"""[kafka]
bootstrap.servers = {kafka}
group.id = {group}

[postgres]
conninfo = {conninfo}
direct_copy = {"on" if direct else "off"}

[batch]
max_rows = {MAX_ROWS}
max_bytes = 268435456
linger_ms = 600000
write_when_idle = off

[http]
listen =

[table memory_entries]
topic = {topic}
on_conflict = update
""")
    path.flush()


def stored(conninfo, group):
    conn = bench.connect(conninfo)
    try:
        return bench.stored(conn, group)
    finally:
        conn.close()


def measure(args, conninfo, topic, direct, out_file, log_file):
    """One callgrind run of copysink until every offset of `topic` is stored; returns the
    callgrind out file."""
    group = "cpuprof-" + uuid.uuid4().hex[:8]
    ends = bench.end_offsets(args.kafka, topic)
    with tempfile.NamedTemporaryFile("w", suffix=".ini") as cfg, open(log_file, "wb") as lf:
        config(cfg, conninfo, args.kafka, topic, group, direct)
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                                 args.bin, "run", "-c", cfg.name], stdout=lf, stderr=lf)
        deadline = time.monotonic() + args.timeout
        try:
            while stored(conninfo, group) != ends:
                if proc.poll() is not None:
                    raise RuntimeError(f"copysink exited with {proc.returncode}, see {log_file}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"offsets not stored within {args.timeout} s, see {log_file}")
                time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(600)
    if rc != 0:
        raise RuntimeError(f"copysink exited with {rc} after SIGTERM, see {log_file}")
    return out_file


def run(args):
    n = args.entries
    names = topics(args.kafka, n)
    res = load()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no",
                            "--", ".", ":!bench/results"],
                           capture_output=True, text=True).stdout.strip()
    entry = {"commit": commit + ("+dirty" if dirty else ""), "entries": n,
             "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "note": args.note, "runs": {}}
    if args.label in res and args.keep:
        entry["runs"] = res[args.label].get("runs", {})
    servers = [("real[]", args.pg15, False), ("vector", args.pg16, True)]
    os.makedirs(args.work, exist_ok=True)
    for kind, admin, vector in servers:
        if kind not in args.kinds:
            continue
        ci = prepare_db(admin, args.bin, vector)
        conn = bench.connect(ci)
        with conn.cursor() as cur:
            cur.execute("TRUNCATE memory_entries")
        conn.close()
        # new keys first (direct COPY into the empty table), then every key again (staging +
        # merge; direct_copy = off, so that no batch first tries the direct COPY and fails)
        for path, direct in (("new", True), ("update", False)):
            tag = f"{args.label}.{'vector' if vector else 'real'}.{path}"
            out = os.path.join(args.work, f"callgrind.{tag}.out")
            log(f"{args.label}: {kind}, {path}: callgrind run")
            t0 = time.monotonic()
            measure(args, ci, names[path], direct, out, os.path.join(args.work, f"{tag}.log"))
            cats, total = split(out)
            entry["runs"][f"{kind} {path}"] = {
                "total": total, "per_row": total / n,
                "categories": {k: v / n for k, v in cats.items()},
                "inclusive": annotate(out, True), "self": annotate(out, False),
                "wall_s": round(time.monotonic() - t0, 1),
            }
            log(f"  {total / n:,.0f} instructions per row")
    res[args.label] = entry
    save(res)
    report(res)


# ---------------------------------------------------------------- report


def load():
    if os.path.exists(JSON_PATH):
        with open(JSON_PATH) as f:
            return json.load(f)
    return {}


def save(res):
    os.makedirs(RESULTS, exist_ok=True)
    with open(JSON_PATH, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")


RUNS = ("real[] new", "real[] update", "vector new", "vector update")


def fmt(x):
    return f"{x:,.0f}"


def report(res):
    ideas = []
    if os.path.exists(IDEAS_PATH):
        with open(IDEAS_PATH) as f:
            ideas = json.load(f)
    first = ideas[0]["before"] if ideas else next(iter(res), None)
    last = next((i["after"] for i in reversed(ideas) if i.get("kept") and "after" in i), first)
    lines = ["# copysink: instructions per row on the write path (callgrind)", "",
             "Written by `bench/profile_cpu.py` (do not edit: run `bench/profile_cpu.py report`).",
             "Each figure: instructions of the whole copysink process (every thread, start-up and "
             "shutdown included; the kernel's are not counted) under `valgrind --tool=callgrind`, "
             "divided by the entries. The entries are bench.py's memory entries (12-word value, "
             "384-float32 embedding as a 1,536-byte bin, 5-field metadata map, 3 tags; 1,754 "
             "bytes of msgpack), produced lz4-compressed; batches of 5,000 rows. *new*: new keys, "
             "direct COPY into the table; *update*: every key again, COPY into the staging table "
             "and merge (direct_copy = off). real[] on PostgreSQL 15, vector(384) on PostgreSQL "
             "16.2 with pgvector 0.6.2. Helpers (libc's memcpy, malloc) are charged to their "
             "callers.", "",
             "Two things callgrind counts differently from what they cost: a `rep movsb` (glibc's "
             "memcpy of 4 KiB and more) is one instruction per byte, so libpq's copy of the COPY "
             "data into its output buffer (about one per byte sent) and the growth of the batch's "
             "buffers in the first batch show far above their cost; and work done by time (the "
             "stats published every 100 ms, librdkafka's timers) is stretched with the run, "
             "which is tens of times slower under callgrind.", ""]
    if first in res and last in res:
        lines += [f"## Before and after: `{first}` ({res[first]['commit']}) and `{last}` "
                  f"({res[last]['commit']})", "",
                  "| run | before | after | change |", "|---|---:|---:|---:|"]
        for r in RUNS:
            a, b = res[first]["runs"].get(r), res[last]["runs"].get(r)
            if a and b:
                lines.append(f"| {r} | {fmt(a['per_row'])} | {fmt(b['per_row'])} | "
                             f"{100 * (b['per_row'] - a['per_row']) / a['per_row']:+.1f}% |")
        lines.append("")
    if ideas:
        have = [r for r in RUNS if any(r in res.get(i.get("after"), {}).get("runs", {})
                                        for i in ideas)]
        lines += ["## Ideas", "",
                  "Instructions per row, before -> after each change, on the same inputs.", "",
                  "| idea | " + " | ".join(have) + " | kept |",
                  "|---|" + "---:|" * len(have) + "---|"]
        for i in (i for i in ideas if "before" in i):
            a, b = res.get(i["before"], {}).get("runs", {}), res.get(i["after"], {}).get("runs", {})
            cells = [f"{fmt(a[r]['per_row'])} -> {fmt(b[r]['per_row'])}" if r in a and r in b
                     else "" for r in have]
            lines.append(f"| {i['idea']} | " + " | ".join(cells) +
                         f" | {'yes' if i.get('kept') else 'no'} |")
        lines.append("")
        dropped = [i for i in ideas if "before" not in i]
        if dropped:
            lines += ["Looked at and not done (figures from the profiles above):", ""]
            lines += [f"- {i['idea']}" for i in dropped]
            lines.append("")
    for label in [x for x in (first, last) if x in res] if first != last else [first]:
        e = res[label]
        lines += [f"## Split: `{label}` ({e['commit']}, {e['date']}{'; ' + e['note'] if e.get('note') else ''})",
                  "", "| category | " + " | ".join(r for r in RUNS if r in e["runs"]) + " |",
                  "|---|" + "---:|" * len([r for r in RUNS if r in e["runs"]])]
        for key, title in CATEGORIES:
            lines.append(f"| {title} | " + " | ".join(
                fmt(e["runs"][r]["categories"].get(key, 0)) for r in RUNS if r in e["runs"]) + " |")
        lines.append("| **whole process** | " + " | ".join(
            f"**{fmt(e['runs'][r]['per_row'])}**" for r in RUNS if r in e["runs"]) + " |")
        lines.append("")
        for r in RUNS:
            if r not in e["runs"]:
                continue
            for what in ("inclusive", "self"):
                lines += [f"<details><summary>{label}, {r}: top functions ({what}), instructions "
                          "per row</summary>", "", "| Ir per row | function |", "|---:|---|"]
                for ir, fn in e["runs"][r][what]:
                    lines.append(f"| {fmt(ir / e['entries'])} | `{fn}` |")
                lines += ["", "</details>", ""]
    with open(MD_PATH, "w") as f:
        f.write("\n".join(lines))
    log(f"wrote {MD_PATH}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure under callgrind")
    r.add_argument("--label", required=True, help="the name the figures are kept under")
    r.add_argument("--note", default="")
    r.add_argument("--entries", type=int, default=20000)
    r.add_argument("--kinds", default="real[],vector", help="real[], vector or both")
    r.add_argument("--keep", action="store_true",
                   help="keep the label's runs of the kinds not measured now")
    r.add_argument("--pg15", default="host=127.0.0.1 port=55800 user=postgres dbname=postgres")
    r.add_argument("--pg16", default="host=127.0.0.1 port=55810 user=postgres dbname=postgres")
    r.add_argument("--kafka", default="127.0.0.1:59800")
    r.add_argument("--bin", default=os.path.join(ROOT, "build", "copysink"),
                   help="copysink built with -DCMAKE_BUILD_TYPE=RelWithDebInfo")
    r.add_argument("--work", default="/tmp/cpu-prof", help="callgrind files and logs")
    r.add_argument("--timeout", type=float, default=1800)
    sub.add_parser("report", help="write cpu_profile.md from cpu_profile.json")
    args = ap.parse_args()
    if args.cmd == "report":
        report(load())
        return
    args.kinds = args.kinds.split(",")
    run(args)


if __name__ == "__main__":
    main()
