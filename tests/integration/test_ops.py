"""What operators and producers touch: `copysink produce`, `copysink migrate` run again, the
metrics, health and readiness of a live worker, and its JSON log lines.

The entries travel the whole way: JSON lines -> `copysink produce` -> the real broker -> the
worker -> PostgreSQL, and /metrics is scraped from the running worker and compared with what
the tables and topics hold.
"""
import json
import random
import re
import subprocess
import urllib.request

import psycopg2

from conftest import stored_offsets, wait_for, write_config
from entries import embedding_from, embedding_sql

PARTITIONS = 3


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric_samples(text):
    """{(name, frozenset(labels)): value} from Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-z_]+)(?:\{(.*)\})? (\S+)', line)
        assert m, f"not Prometheus text: {line!r}"
        labels = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def entries(n, rng):
    return [{"namespace": f"ops{i % 3}", "key": f"k{i}", "value": f"value {i} {rng.random()}",
             "embedding": [round(rng.uniform(-1, 1), 4) for _ in range(384)],
             "metadata": {"i": i, "nested": {"even": i % 2 == 0}}, "tags": ["a", str(i)]}
            for i in range(n)]


def test_produce_metrics_health_and_json_logs(tmp_path, database, kafka, workers, copysink_bin):
    rng = random.Random(3)
    topic = kafka.topic("memory")
    kafka.create_topics({topic: PARTITIONS, topic + ".dlq": 1})
    group = "g-" + kafka.prefix
    port = 19400 + rng.randrange(500)
    # a password in the conninfo (trust authentication ignores it) must never reach the log
    conninfo = database + " password=sekrit-do-not-log"
    config = write_config(tmp_path / "ops.ini", bootstrap=kafka.bootstrap, conninfo=conninfo,
                          group=group, tables={"memory_entries": (topic, "update")},
                          batch={"max_rows": 500, "linger_ms": 100},
                          http_listen=f"127.0.0.1:{port}")
    text = open(config).read().replace("[worker]\n", "[worker]\nlog_format = json\n")
    open(config, "w").write(text)
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)

    good = entries(1200, rng)
    bad = [{"namespace": "ops", "key": "nodim", "value": "v", "embedding": [1.0, 2.0]},
           {"namespace": "ops", "key": "novalue"}]
    lines = tmp_path / "in.jsonl"
    lines.write_text("".join(json.dumps(e) + "\n" for e in good + bad))
    out = subprocess.run([copysink_bin, "produce", "-c", config, "--table", "memory_entries",
                          str(lines)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ends = {(topic, p): o for p, o in kafka.end_offsets(topic).items() if o > 0}
    assert sum(ends.values()) == len(good) + len(bad)

    w = workers(config).start()
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the worker to catch up")
    assert w.alive(), w.log_text()[-3000:]

    # the rows are the JSON lines, value for value
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT namespace, key, value, {embedding_sql()}, metadata, tags "
                    "FROM memory_entries ORDER BY namespace, key")
        got = [(*r[:3], embedding_from(r[3]), *r[4:]) for r in cur.fetchall()]
    want = sorted((e["namespace"], e["key"], e["value"], [float(x) for x in e["embedding"]],
                   e["metadata"], e["tags"]) for e in good)
    assert [(r[0], r[1], r[2], [round(x, 4) for x in r[3]], r[4], r[5]) for r in got] == want
    reasons = sorted({k: v.decode() for k, v in m.headers()}["copysink.reason"]
                     for m in kafka.read_all(topic + ".dlq", 2))
    assert reasons == ["embedding_dim", "missing_field"]

    # health, readiness and the metrics of the live worker
    assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200
    wait_for(lambda: fetch(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "ready")
    status, body = fetch(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    m = metric_samples(body)
    table = frozenset({("table", "memory_entries")})
    assert m[("copysink_rows_written_total", table)] == len(good)
    assert m[("copysink_rows_merged_total", table)] == len(good)
    assert m[("copysink_dead_letters_total", frozenset({("reason", "embedding_dim")}))] == 1
    assert m[("copysink_dead_letters_total", frozenset({("reason", "missing_field")}))] == 1
    assert m[("copysink_messages_total", frozenset())] == len(good) + len(bad)
    batches = m[("copysink_batches_total", frozenset())]
    assert batches >= len(good) / 500
    assert m[("copysink_batch_duration_seconds_count", frozenset())] == batches
    assert m[("copysink_up", frozenset())] == 1
    for (t, p), end in ends.items():
        labels = frozenset({("topic", t), ("partition", str(p))})
        assert m[("copysink_partition_stored_offset", labels)] == end
        assert m[("copysink_partition_lag", labels)] == 0
    assert w.stop() == 0

    # every log line is one JSON object with a level; no password anywhere
    log = w.log_text()
    assert "sekrit" not in log
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert all(r.get("level") in ("debug", "info", "warning", "error") and r.get("msg")
               for r in records)
    committed = [r for r in records if r["msg"] == "batch committed"]
    assert sum(int(r["rows"]) for r in committed) == len(good)
    for r in committed:  # per table: name:rows/bytesB/rows per s/path
        name, rest = r["tables"].split(":")
        t_rows, t_bytes, t_rate, unit, path = rest.split("/")
        assert (name, unit) == ("memory_entries", "s") and path in ("direct", "merge"), r
        assert t_bytes.endswith("B"), r
        assert (int(t_rows), int(t_bytes[:-1])) == (int(r["rows"]), int(r["bytes"])), r
        assert int(t_rate) == int(r["rows_per_s"]), r
    assert len(committed) == batches


def test_migrate_twice_changes_nothing(tmp_path, database, kafka, copysink_bin):
    """`copysink migrate` is idempotent: a second run leaves the tables, their columns,
    indexes and rows as they were."""
    config = write_config(tmp_path / "m.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group="g", tables={"memory_entries": ("m", "update"),
                                             "patterns": ("p", "update"),
                                             "trajectories": ("t", "skip")})

    def catalog():
        with psycopg2.connect(database) as conn, conn.cursor() as cur:
            cur.execute("SELECT table_name, column_name, data_type, is_nullable, "
                        "column_default FROM information_schema.columns "
                        "WHERE table_schema = 'public' ORDER BY 1, 2")
            cols = cur.fetchall()
            cur.execute("SELECT tablename, indexname, indexdef FROM pg_indexes "
                        "WHERE schemaname = 'public' ORDER BY 1, 2")
            return cols, cur.fetchall()

    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    first = catalog()
    assert {c[0] for c in first[0]} >= {"memory_entries", "patterns", "trajectories",
                                         "copysink_offsets"}
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO patterns (name, pattern_type) VALUES ('p1', 'kind')")
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    assert catalog() == first
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, pattern_type FROM patterns")
        assert cur.fetchall() == [("p1", "kind")]
