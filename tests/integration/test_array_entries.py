"""Limits apply per entry: one bad entry of an array message is dead-lettered alone.

Each message is an array of three entries whose middle one breaks one limit (nesting 40 levels
deep, beyond the default 32; a name that is not UTF-8; an element that is not a map). Through
a real broker and PostgreSQL, the first and last entries of every message must land with their
exact values, and each middle one must be on the dead-letter topic alone: its own bytes, its
reason, and its index in `copysink.entry`.
"""
import subprocess

import msgpack
import psycopg2

from conftest import stored_offsets, wait_for, write_config

SPEC = """
[table items]
topic = {topic}
on_conflict = update
columns = id bigint not null, name text not null, meta jsonb
key = id
"""


def nested(levels):
    value = None
    for _ in range(levels):
        value = [value]
    return value


def bad_utf8_entry(i):
    """msgpack of {"id": i, "name": <7 bytes that are not UTF-8>}."""
    raw = msgpack.packb({"id": i, "name": "@@BAD@@"})
    assert raw.count(b"\xa7@@BAD@@") == 1
    return raw.replace(b"\xa7@@BAD@@", b"\xa7ba\xffd\xfe!!")


def test_one_bad_entry_of_an_array_is_dead_lettered_alone(tmp_path, database, kafka, workers,
                                                          copysink_bin):
    topic = kafka.topic("items")
    kafka.create_topics({topic: 1, topic + ".dlq": 1})
    group = "g-" + kafka.prefix
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={}, extra=SPEC.format(topic=topic))
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)

    good = {
        1: {"id": 1, "name": "one", "meta": {"a": [1, "x", None], "deep": nested(30)}},
        3: {"id": 3, "name": "three", "meta": {"b": True}},
        4: {"id": 4, "name": "four café"},
        6: {"id": 6, "name": "six", "meta": [1.5, {"c": "d"}]},
        7: {"id": 7, "name": "seven"},
        9: {"id": 9, "name": "nine", "meta": "text"},
    }
    # (key, middle element bytes, reason, error)
    cases = [
        (b"deep", msgpack.packb({"id": 2, "name": "two", "meta": {"x": nested(40)}}),
         "too_deep", 'field "meta" nests deeper than 32 levels'),
        (b"utf8", bad_utf8_entry(5), "invalid_utf8", 'field "name" is not valid UTF-8'),
        (b"scalar", msgpack.packb(8), "not_a_map", "entry 1 is int, not a map"),
    ]
    firsts, lasts = (1, 4, 7), (3, 6, 9)
    records = []
    for (key, middle, _, _), a, b in zip(cases, firsts, lasts):
        value = b"\x93" + msgpack.packb(good[a]) + middle + msgpack.packb(good[b])
        records.append((topic, key, value))
    positions = kafka.produce(records)
    ends = {(topic, 0): positions[-1][2] + 1}

    w = workers(config).start()

    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the worker to catch up")
    assert w.stop() == 0, w.log_text()[-3000:]

    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, meta FROM items ORDER BY id")
        rows = cur.fetchall()
    assert rows == [(i, e["name"], e.get("meta")) for i, e in sorted(good.items())]

    letters = kafka.read_all(topic + ".dlq", len(cases))
    assert len(letters) == len(cases), [dict(m.headers()) for m in letters]
    by_offset = {}
    for m in letters:
        h = {k: v.decode() for k, v in m.headers()}
        by_offset[int(h["copysink.offset"])] = (m.key(), m.value(), h)
    assert sorted(by_offset) == [p[2] for p in positions]
    for (key, middle, reason, error), pos in zip(cases, positions):
        got_key, got_value, h = by_offset[pos[2]]
        assert got_key == key
        assert got_value == middle, "the dead letter must be the bad entry's own bytes"
        assert h["copysink.reason"] == reason
        assert h["copysink.entry"] == "1"
        assert h["copysink.error"] == error
        assert h["copysink.table"] == "items"
        assert (h["copysink.topic"], h["copysink.partition"]) == (topic, "0")
