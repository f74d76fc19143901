#!/usr/bin/env python3
"""copysink benchmark: copysink end to end against the raw binary COPY ceiling, a hand-typed
merge, the seed's method and a peer (Debezium's JDBC sink, bench/peer.py), in paired rounds,
on the same generated entries, on one or more PostgreSQL servers in one run on one machine.

Run it through bench/run.sh, which builds copysink and starts PostgreSQL 15, PostgreSQL 16 with
pgvector and Kafka. Per server: the table migrated afresh (vector(384) where the server has
pgvector, real[] where not), the rows in the column's binary form, then the phases. The entries
and their topics are made once and shared by the servers.

Phases (--phases, default headline,writers,seed,peer,latency; optional toast,batch,staging,
profile,ab):
  headline  at the defaults: new keys vs the raw binary COPY over as many connections as the
            worker's writers; every key existing vs binary COPY into a temp table + one
            INSERT ... ON CONFLICT DO UPDATE per batch of copysink's size (the median of the
            committed batches in copysink's log of the same round, or of the round before when
            the merge goes first), as many connections
  writers   [postgres] writers = N vs N raw COPYs at once, N in --writers-list
  seed      copysink at the defaults vs the seed's StringIO text COPY + ON CONFLICT
  peer      copysink at the defaults vs the peer, new keys and updates, --peer-entries rows
  latency   p99 produce -> commit at half the headline's new-keys median, the defaults
  ab        copysink at the defaults vs copysink with --ab-set's settings, new keys and
            updates on the headline's topics (what one setting changes)
Each comparison runs --rounds paired rounds (A first in odd rounds, B first in even ones) and
reports the median of each side, the ratio of medians, min and max. Writes OUT/results.json
(every figure) and OUT/results.md (made from results.json only), logs in OUT/logs/<server>/.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import traceback
import uuid

import cpu
import csrun
import kafkaside
import pgside
import phases
import report
import summarize
from entries import COLS, CopyRows, embedding_pool, make_entries, to_msgpack  # noqa: F401

# The names bench/peer.py imports from this module (it runs beside it)
from csrun import peak_rss_kb  # noqa: E402,F401
from kafkaside import (PRODUCER, create_topic, end_offsets, produce, produce_pairs,  # noqa: F401
                       warm_up)
from pgside import connect, stored  # noqa: F401

MIN_ROUNDS = 5


def binary_copy(entries, kind):
    """The entries as one binary COPY stream, the embedding as KIND (for bench/sql_variants.py,
    which splits it into rows)."""
    return CopyRows(entries, kind).stream()


def embedding_kind(conn):
    """The table's embedding kind, "vector" or "real[]" (for bench/peer.py)."""
    return pgside.embedding_kind(conn)[0]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Shared:
    """What every server's phases share: the entries, the topics (produced once), the peer."""

    def __init__(self, args, res):
        n = args.entries
        self.run_id = "bench." + uuid.uuid4().hex[:6]
        self.kafka = args.kafka
        log(f"generating {n} entries, new keys and the same keys with every value changed")
        self.pool = embedding_pool(1)
        self.new = make_entries(n, 1, 1, self.pool)
        self.upd = make_entries(n, 1, 2, self.pool)
        res["msgpack_bytes_per_row"] = sum(len(to_msgpack(e)) for e in self.new[:1000]) / \
            min(n, 1000)
        self.peer_n = min(args.peer_entries, n)
        self.topics = {"new": f"{self.run_id}.new", "upd": f"{self.run_id}.upd"}
        wanted = [("new", self.new), ("upd", self.upd)]
        self.peer = self.peer_error = None
        if "peer" in args.phases:
            try:
                self.peer = phases.load_peer()
            except Exception as e:  # bench/peer.py is there but fails: the peer phase's error
                self.peer_error = e
        if self.peer is not None:
            self.topics.update(peer_new=f"{self.run_id}.peer-new",
                               peer_upd=f"{self.run_id}.peer-upd")
            wanted += [("peer_new", self.new[:self.peer_n]),
                       ("peer_upd", self.upd[:self.peer_n])]
        res["produce_s"] = {}
        for key, entries in wanted:
            kafkaside.create_topic(args.kafka, self.topics[key])
            log(f"producing {len(entries)} entries to {self.topics[key]}")
            res["produce_s"][key] = kafkaside.produce(args.kafka, self.topics[key], entries)
        kafkaside.warm_up(args.kafka, self.topics["new"])
        # the broker's new segments written back now, not during the first measured run
        os.sync()
        self.peer_cache = args.peer_cache
        self._classpath = None
        self._json = {}

    def peer_classpath(self):
        """The peer's classpath, resolved once (by its first peer phase: a failure there is
        that phase's)."""
        if self._classpath is None:
            log("peer: preparing its classpath")
            self._classpath = self.peer.prepare(self.peer_cache or self.peer.default_cache_dir())
        return self._classpath

    def peer_json_topics(self, kind):
        """The peer's topics (its JSON form of the same rows, which depends on the column's
        kind), produced once per kind."""
        if kind not in self._json:
            slug = kind.replace("[]", "-array")
            topics = {"new": f"{self.run_id}.peer-json-{slug}.new",
                      "update": f"{self.run_id}.peer-json-{slug}.upd"}
            for variant, entries in (("new", self.new), ("update", self.upd)):
                kafkaside.create_topic(self.kafka, topics[variant])
                log(f"peer: producing {self.peer_n} entries as JSON to {topics[variant]}")
                self.peer.produce_json(self.kafka, topics[variant], entries[:self.peer_n], kind)
            os.sync()
            self._json[kind] = topics
        return self._json[kind]


def servers_of(args):
    """[(name, conninfo)] from --pg, --pg16 and every --server NAME=CONNINFO."""
    out = []
    if args.pg:
        out.append(("pg15", args.pg))
    if args.pg16:
        out.append(("pg16", args.pg16))
    for spec in args.server or []:
        name, sep, conninfo = spec.partition("=")
        if not sep or not name or not conninfo:
            raise SystemExit(f"--server {spec!r}: expected NAME=CONNINFO")
        out.append((name, conninfo))
    return out


def run_server(args, shared, label, conninfo, results, timings):
    """Prepare one server (migrate, the rows in its binary form) and run the phases on it."""
    t0 = time.monotonic()
    log(f"== {label}: migrate")
    pgside.migrate(args.bin, conninfo)
    conn = pgside.connect(conninfo)
    info = pgside.server_info(conn)
    kind, coltype = pgside.embedding_kind(conn)
    key = f"pg{info['major']}-{kind}"
    if key in results["servers"]:
        key = f"{key} ({label})"
    slug = key.replace("[]", "").replace(" ", "_").replace("(", "").replace(")", "")
    out = os.path.join(args.out, "logs", slug)
    os.makedirs(out, exist_ok=True)
    res = results["servers"][key] = {"label": label, "postgres": info["version"],
                                     "pgvector": info["vector"], "embedding_type": kind,
                                     "embedding_column": coltype, "entries": args.entries,
                                     "logs": os.path.relpath(out, args.out)}
    target = csrun.Target(args.bin, args.kafka, conninfo, conn, out,
                          cpu.read_pid_file(args.kafka_pid_file) if args.kafka_pid_file
                          else None, overrides(args))
    res["broker_cpu_measured"] = target.broker_pid is not None
    s = phases.Server(key, conninfo, conn, target, kind, res, shared, args)
    s.slug = slug
    timings[key] = {"prepare": time.monotonic() - t0}
    for ph in args.phases:
        t1 = time.monotonic()
        log(f"== {key}: phase {ph}")
        try:
            phases.PHASES[ph](s)
        except Exception as e:  # recorded; the other phases still run, the exit status is 1
            log(traceback.format_exc())
            res.setdefault("errors", {})[ph] = f"{type(e).__name__}: {e}"
            results["run"].setdefault("failed", []).append(f"{key}: {ph}")
        timings[key][ph] = time.monotonic() - t1
        summarize.server(res, overrides(args))
        write_json(args, results)  # what is measured so far survives a later failure
    conn.close()


def overrides(args):
    """Settings given on the command line for every run (none by default: the defaults runs
    then write no bound at all)."""
    o = {}
    if args.max_bytes is not None:
        o.setdefault("batch", {})["max_bytes"] = args.max_bytes
    if args.linger_ms is not None:
        o.setdefault("batch", {})["linger_ms"] = args.linger_ms
    for item in args.set:
        name, sep, value = item.partition("=")
        sec, dot, key = name.partition(".")
        if not sep or not dot or not sec or not key:
            raise SystemExit(f"--set {item}: expected SECTION.KEY=VALUE")
        o.setdefault(sec, {})[key] = value
    return o


def write_json(args, results):
    path = os.path.join(args.out, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", help="conninfo of the PostgreSQL 15 server (an empty database)")
    ap.add_argument("--pg16", help="conninfo of the PostgreSQL 16 server with pgvector")
    ap.add_argument("--server", action="append", metavar="NAME=CONNINFO",
                    help="another server (repeatable); each server's table is made afresh")
    ap.add_argument("--kafka", help="bootstrap servers")
    ap.add_argument("--kafka-pid-file", help="the broker's pid file (scripts/kafka.sh's "
                    "DIR/kafka.pid), for its CPU; without it the broker's CPU is not measured")
    ap.add_argument("--bin", help="the copysink binary (copysink_rate_producer beside it)")
    ap.add_argument("--out", default=None,
                    help="where results.json, results.md and the logs go (default: "
                         "bench/results, with --quick bench/results-quick, which git ignores)")
    ap.add_argument("--phases", default=",".join(phases.DEFAULT_PHASES),
                    help="comma-separated, in this order: " + ",".join(phases.PHASES) +
                         " (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=None,
                    help=f"paired rounds of every comparison, fixed before the run (default "
                         f"{MIN_ROUNDS}, at least {MIN_ROUNDS} unless --quick; --quick: 2)")
    ap.add_argument("--quick", action="store_true",
                    help="development run: fewer rounds allowed, results labelled quick, "
                         "never figures for the docs")
    ap.add_argument("--entries", type=int, default=200_000, help="headline entries")
    ap.add_argument("--seed-entries", type=int, default=20_000,
                    help="entries of the seed's COPY method (slow; rows/s do not depend on it)")
    ap.add_argument("--insert-entries", type=int, default=2_000,
                    help="entries of the seed's individual INSERTs (0: none)")
    ap.add_argument("--peer-entries", type=int, default=20_000,
                    help="entries of the peer phase (copysink runs on the same)")
    ap.add_argument("--peer-cache", default=None,
                    help="where bench/peer.py keeps the peer's jars (default: its own, "
                         "${COPYSINK_CACHE:-.cache}/debezium)")
    ap.add_argument("--writers-list", default="1,2,3",
                    help="writers of the writers phase (default: %(default)s)")
    ap.add_argument("--latency-rounds", type=int, default=None,
                    help=f"rounds of the latency mode (default {MIN_ROUNDS}; --quick: 2)")
    ap.add_argument("--latency-seconds", type=float, default=None,
                    help="length of each latency round (default 20; --quick: 5)")
    ap.add_argument("--latency-rate", type=float, default=None,
                    help="entries/s of the latency mode (default: half the headline's "
                         "copysink new-keys median)")
    ap.add_argument("--max-bytes", type=int, default=None,
                    help="[batch] max_bytes for every run (default: not written, the "
                         "worker's default)")
    ap.add_argument("--linger-ms", type=int, default=None,
                    help="[batch] linger_ms for every run (default: not written)")
    ap.add_argument("--ab-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="the ab phase: the settings of side B (repeatable); side A runs at "
                         "the defaults")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="any setting of the worker's configuration for every run, e.g. "
                         "kafka.queued.max.messages.kbytes=7000 (repeatable; the results "
                         "then describe those settings, not the defaults)")
    ap.add_argument("--toast-entries", type=int, default=50_000,
                    help="rows per width of the toast phase")
    ap.add_argument("--batch-sizes", default="1000,2500,5000,10000,20000",
                    help="max_rows values of the batch phase")
    ap.add_argument("--report-only", action="store_true",
                    help="write OUT/results.md again from OUT/results.json")
    args = ap.parse_args()
    args.phases = [p for p in args.phases.split(",") if p]
    for p in args.phases:
        if p not in phases.PHASES:
            ap.error(f"--phases: unknown phase {p!r} (known: {', '.join(phases.PHASES)})")
    args.phases = [p for p in phases.PHASES if p in args.phases]  # the documented order
    args.writers_list = [int(x) for x in args.writers_list.split(",") if x]
    for name, quick_default in (("rounds", 2), ("latency_rounds", 2)):
        v = getattr(args, name)
        if v is None:
            setattr(args, name, quick_default if args.quick else MIN_ROUNDS)
        elif v < MIN_ROUNDS and not args.quick:
            ap.error(f"--{name.replace('_', '-')} {v}: at least {MIN_ROUNDS} (or --quick)")
        elif v < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.out is None:
        here = os.path.dirname(os.path.abspath(__file__))
        args.out = os.path.join(here, "results-quick" if args.quick else "results")
    if args.latency_seconds is None:
        args.latency_seconds = 5 if args.quick else 20
    return ap, args


def main():
    ap, args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        with open(os.path.join(args.out, "results.json")) as f:
            report.write(json.load(f), args.out)
        return
    servers = servers_of(args)
    if not (servers and args.kafka and args.bin):
        ap.error("--kafka, --bin and at least one of --pg, --pg16, --server are required "
                 "(bench/run.sh gives them)")
    t_start = time.monotonic()
    results = {"run": {
        "quick": args.quick, "rounds": args.rounds, "latency_rounds": args.latency_rounds,
        "phases": args.phases, "entries": args.entries, "seed_entries": args.seed_entries,
        "insert_entries": args.insert_entries, "peer_entries": args.peer_entries,
        "writers_list": args.writers_list, "overrides": overrides(args),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "copysink_version": subprocess.run([args.bin, "--version"], capture_output=True,
                                           text=True).stdout.strip(),
        "command": sys.argv[1:]}, "servers": {}, "seconds": {}}
    t0 = time.monotonic()
    shared = Shared(args, results["run"])
    results["seconds"]["shared prepare"] = time.monotonic() - t0
    timings = {}
    results["seconds"]["servers"] = timings
    for label, conninfo in servers:
        run_server(args, shared, label, conninfo, results, timings)
    results["seconds"]["total"] = time.monotonic() - t_start
    summarize.run(results)
    write_json(args, results)
    report.write(results, args.out)
    log("\ntime per phase (s):")
    log(f"  shared prepare (entries, topics): {results['seconds']['shared prepare']:.0f}")
    for key, ph in timings.items():
        log(f"  {key}: " + ", ".join(f"{p} {v:.0f}" for p, v in ph.items()))
    log(f"  total: {results['seconds']['total']:.0f}")
    if results["run"].get("failed"):
        log("failed phases: " + "; ".join(results["run"]["failed"]))
        sys.exit(1)


if __name__ == "__main__":
    main()
