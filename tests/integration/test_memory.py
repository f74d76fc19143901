"""The memory bound: at the defaults a worker holds at most 3 x max_bytes + 32 MB.

The case that broke it: a backlog of entries whose embeddings barely compress, produced in
small lz4 sets (a producer with a short linger and a small batch.size). librdkafka decompresses
each set into a buffer of 4 x its compressed bytes and keeps it until the set's last message is
destroyed, so the prefetch queue held about four times what its limit counts. The worker loads
the backlog at its defaults (three partitions: three writers, two batches each); its peak RSS
(VmHWM) is read once every offset is stored, and every row must be in the table.
"""
import random
import re
import struct

import psycopg2

from conftest import end_offsets, stored_offsets, wait_for

ENTRIES = 120_000
PARTITIONS = 3
DIM = 384


def config_text(kafka, conninfo, group, topic):
    """The defaults: no [batch] bound, no writers, no [kafka] size (only what a run needs)."""
    return "\n".join([
        "[kafka]", f"bootstrap.servers = {kafka.bootstrap}", f"group.id = {group}", "",
        "[postgres]", f"conninfo = {conninfo}", "",
        "[http]", "listen = ", "",
        "[table memory_entries]", f"topic = {topic}", "on_conflict = update", ""])


def entries(rng):
    """(key, value) of ENTRIES distinct entries in the compact form; the embeddings are drawn
    from a pool of 4,000 random ones, so a set of some 40 entries barely compresses."""
    import msgpack

    pool = [struct.pack(f"<{DIM}f", *(rng.uniform(-1, 1) for _ in range(DIM)))
            for _ in range(4000)]
    for i in range(ENTRIES):
        e = {"namespace": "mem", "key": f"k{i}", "value": f"value {i}",
             "embedding": pool[rng.randrange(len(pool))], "metadata": {"i": i}}
        yield msgpack.packb(["mem", f"k{i}"]), msgpack.packb(e, use_bin_type=True)


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1))


def test_peak_rss_within_bound_on_small_lz4_sets(tmp_path, database, kafka, workers,
                                                 copysink_bin):
    import subprocess

    rng = random.Random(7)
    topic = kafka.topic("memory.entries")
    kafka.create_topics({topic: PARTITIONS})
    kafka.produce([(topic, k, v) for k, v in entries(rng)],
                  {"linger.ms": 5, "batch.size": 65536})
    group = "mem-" + kafka.prefix
    config = tmp_path / "memory.ini"
    config.write_text(config_text(kafka, database, group, topic))
    subprocess.run([copysink_bin, "migrate", "-c", str(config)], check=True)
    w = workers(str(config)).start()
    start = w.wait_log(r'msg="copysink \S+ started: [^"]*"', timeout=60)[0].group(0)
    max_bytes = int(re.search(r"max_bytes=(\d+)", start).group(1))
    assert max_bytes == 33554432, f"not the default max_bytes: {start}"
    want = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == want, 300,
             "every offset stored")
    peak = peak_rss_kb(w.proc.pid)
    print(f"peak RSS {peak} kB")
    assert w.stop() == 0
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        # every entry once, its own value and metadata beside its key, a full embedding
        cur.execute("SELECT count(*), count(DISTINCT key), count(*) FILTER (WHERE "
                    "key = 'k' || (metadata->>'i') AND value = 'value ' || (metadata->>'i')"
                    " AND embedding IS NOT NULL) FROM memory_entries WHERE namespace = 'mem'")
        assert cur.fetchone() == (ENTRIES, ENTRIES, ENTRIES)
    bound_kb = (3 * max_bytes + 32 * 1048576) // 1024
    assert peak <= bound_kb, (f"peak RSS {peak / 1024:.0f} MB over the bound "
                              f"3 x max_bytes + 32 MB = {bound_kb / 1024:.0f} MB")
