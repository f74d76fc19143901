"""A rolling restart by SIGTERM, many times over: three workers in one group (the worker's
default assignor: roundrobin on librdkafka before 2.4, cooperative-sticky after) on two
insert-only tables with several
partitions, entries flowing at a paced rate. Each round SIGTERMs one of the three (rotating),
waits for it to exit, requires exit code 0 and no "Assertion" in its log, and starts a
replacement. Most rounds wait until the replacement has been assigned partitions before the
next SIGTERM; every third lands mid-rebalance instead — a short random moment after the
replacement started, before its assignment — alternately on that fresh replacement (a consumer
closed before its first assignment: librdkafka < 2.3 aborts there with
"rd_kafka_sticky_assignor_state_destroy: Assertion `assignor_state' failed") and on the next
worker in the rotation (a scale-down while the group rebalances). At the end both tables hold
every produced entry exactly once.

COPYSINK_ROLLING_SIGTERMS (default 50) and COPYSINK_ROLLING_RATE (entries/s, default 400)
override the size of the run. The figures are printed as one JSON line, and written to
COPYSINK_ROLLING_REPORT=FILE when set.
"""
import json
import os
import random
import signal
import subprocess
import time

from conftest import (ASSIGNED, EVENTS_SPEC, EventFeeder, assert_events_exactly_once,
                      end_offsets, stored_offsets, wait_for, write_config)

SIGTERMS = int(os.environ.get("COPYSINK_ROLLING_SIGTERMS", "50"))
RATE = int(os.environ.get("COPYSINK_ROLLING_RATE", "400"))
PARTITIONS = {"events": 6, "events_b": 4}


def test_rolling_sigterm(tmp_path, database, kafka, workers, copysink_bin):
    rng = random.Random(11)
    topics = {t: kafka.topic(t) for t in PARTITIONS}
    kafka.create_topics({topics[t]: n for t, n in PARTITIONS.items()})
    group = "roll-" + kafka.prefix
    extra = EVENTS_SPEC.format(topic=topics["events"])
    extra += EVENTS_SPEC.replace("[table events]", "[table events_b]").format(
        topic=topics["events_b"])
    config = write_config(tmp_path / "roll.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={}, batch={"max_rows": 500, "linger_ms": 100},
                          kafka_settings={"session.timeout.ms": 2000,
                                          "heartbeat.interval.ms": 300},
                          extra=extra)
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    partitions = {(topics[t], p) for t, n in PARTITIONS.items() for p in range(n)}

    started = time.time()
    feeder = EventFeeder(kafka, topics.values(), rate=RATE).start()
    serial = [0]

    def start_worker():
        serial[0] += 1
        return workers(config, f"w{serial[0]}").start()

    pool = [start_worker() for _ in range(3)]
    for w in pool:
        w.wait_log(ASSIGNED, timeout=90)
    kafka.wait_group_balanced(group, 3, partitions, timeout=90)

    codes, asserted, mid_rebalance, exit_secs = [], [], 0, []
    slot, fresh = 0, None
    for n in range(SIGTERMS):
        # every third SIGTERM lands mid-rebalance: alternately on the replacement just
        # started (not assigned yet) and on the next worker of the rotation
        rush = n % 3 == 2
        if rush and (n // 3) % 2 == 0 and fresh is not None:
            slot = fresh
        victim = pool[slot]
        if rush:
            mid_rebalance += 1
            time.sleep(rng.uniform(0.2, 2.0))  # a random moment of the replacement's join
        t0 = time.time()
        victim.proc.send_signal(signal.SIGTERM)
        try:
            code = victim.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = "no exit within 60 s"
        exit_secs.append(time.time() - t0)
        if victim.alive():
            victim.kill()
        else:
            victim.log.close()
            victim.proc = None
        log = victim.log_text()
        codes.append(code)
        if "Assertion" in log:
            asserted.append(victim.log_path)
        if code != 0:
            print(f"SIGTERM {n + 1}: {victim.log_path} exited with {code}; its log ends:\n"
                  + log[-1500:])
        pool[slot] = start_worker()
        fresh = slot
        slot = (slot + 1) % 3
        if (n + 1) % 3 != 2:
            # the next SIGTERM waits until the replacement holds partitions
            pool[fresh].wait_log(ASSIGNED, timeout=90)

    # the last replacement settles, production stops, every entry lands
    for w in pool:
        w.wait_log(ASSIGNED, timeout=90)
    ids = feeder.stop()
    ends = end_offsets(kafka, *topics.values())
    wait_for(lambda: stored_offsets(database, group) == ends or
             not all(w.alive() for w in pool), 180, "the workers to catch up")
    for w in pool:
        assert w.alive(), w.log_text()[-3000:]
    final_codes = [w.stop() for w in pool]

    dup = lost = 0
    import psycopg2
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        for t in PARTITIONS:
            cur.execute(f'SELECT id FROM "{t}"')
            got = [r[0] for r in cur.fetchall()]
            dup += len(got) - len(set(got))
            lost += len(set(ids[topics[t]]) - set(got))
    aborts = sum(1 for c in codes if c == -signal.SIGABRT)
    commit = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)),
                             "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    figures = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "commit": commit.stdout.strip() or "unknown",
               "seconds": round(time.time() - started, 1), "sigterms": SIGTERMS,
               "mid_rebalance": mid_rebalance, "entries": feeder.sent,
               "exit_0": codes.count(0), "sigabrt": aborts,
               "other_exits": [c for c in codes if c not in (0, -signal.SIGABRT)],
               "assertion_in_log": len(asserted), "lost": lost, "duplicated": dup,
               "longest_exit_s": round(max(exit_secs), 1)}
    print("rolling sigterm figures:", json.dumps(figures))
    if os.environ.get("COPYSINK_ROLLING_REPORT"):
        with open(os.environ["COPYSINK_ROLLING_REPORT"], "w") as f:
            f.write(json.dumps(figures, indent=2) + "\n")

    assert codes.count(0) == SIGTERMS, (f"{SIGTERMS - codes.count(0)} of {SIGTERMS} SIGTERMs "
                                        f"did not exit 0 ({aborts} SIGABRT): {codes}")
    assert not asserted, f"an assertion failed in {asserted}"
    assert final_codes == [0, 0, 0]
    for t in PARTITIONS:
        assert_events_exactly_once(database, sorted(ids[topics[t]]), table=t)
    assert stored_offsets(database, group) == ends
