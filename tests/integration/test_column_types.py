"""Operator tables of every column type: each accepted msgpack form lands exactly, each kind of
bad value is dead-lettered with its reason while the rest of its batch lands.

Two tables: `typed` (a uuid key and a column of every other new type) made by `copysink
migrate`, and `ledger` (a date + numeric + timestamptz key) made by hand, which the start-up
schema check must accept. Values are read back as PostgreSQL's text (`col::text`, session time
zone UTC) and compared with the expected text exactly; timestamps sent as strings are also
compared with the server's own parse of the same string, which checks the rounding of
fractional seconds against PostgreSQL's.
"""
import re
import subprocess
import uuid

import msgpack
import psycopg2

from conftest import stored_offsets, wait_for, write_config

TYPED_SPEC = """
[table typed]
topic = {typed}
on_conflict = update
columns = id uuid not null, at timestamptz not null, day date, amount numeric, raw bytea, \
scores double precision[], counts integer[], big bigint[], doc json, label text
key = id
"""

LEDGER_SPEC = """
[table ledger]
topic = {ledger}
on_conflict = update
columns = day date not null, amount numeric not null, at timestamp with time zone not null, \
note text
key = day, amount, at
"""

LEDGER_DDL = """CREATE TABLE ledger (day date NOT NULL, amount numeric NOT NULL,
    at timestamptz NOT NULL, note text, PRIMARY KEY (day, amount, at))"""

COLUMNS = ["id", "at", "day", "amount", "raw", "scores", "counts", "big", "doc", "label"]
Ts = msgpack.Timestamp


def uid(n):
    return f"{n:08x}-9c0b-4ef8-bb6d-6bb9bd380a11"


# (entry, expected text of each column in COLUMNS order; None: NULL)
GOOD = [
    ({"id": uid(1), "at": "2026-12-03T14:00:00Z", "day": "2026-12-03", "amount": "-123.4500",
      "raw": b"\x00\xff", "scores": [1.5, None, -2.0], "counts": [1, None, -1],
      "big": [-2 ** 63, 2 ** 63 - 1], "doc": {"a": [1, None], "b": "x"}, "label": "A"},
     [uid(1), "2026-12-03 14:00:00+00", "2026-12-03", "-123.4500", "\\x00ff", "{1.5,NULL,-2}",
      "{1,NULL,-1}", "{-9223372036854775808,9223372036854775807}", '{"a":[1,null],"b":"x"}',
      "A"]),
    # upper-case uuid, offset and nanoseconds, date as epoch ms, uint64 numeric, empty values
    ({"id": uid(2).upper(), "at": "2026-12-03T16:00:00.123456789+02:00", "day": 1796256000000,
      "amount": 2 ** 64 - 1, "raw": b"", "scores": [], "counts": [2 ** 31 - 1, -2 ** 31],
      "big": [], "doc": [1, "two", None, 2.5], "label": "B"},
     [uid(2), "2026-12-03 14:00:00.123457+00", "2026-12-03", "18446744073709551615", "\\x",
      "{}", "{2147483647,-2147483648}", "{}", '[1,"two",null,2.5]', "B"]),
    # uuid as 16 bytes, the timestamp ext (32-bit), a float numeric, ints in double precision[]
    ({"id": uuid.UUID(uid(3)).bytes, "at": Ts(1796306400, 0), "day": Ts(1796256000, 0),
      "amount": 0.1, "scores": [1, 2], "big": [None]},
     [uid(3), "2026-12-03 14:00:00+00", "2026-12-03", "0.1", None, "{1,2}", None, "{NULL}",
      None, None]),
    # the 64-bit ext, 1500 ns: to the microsecond, half to even; a leap day
    ({"id": uid(4), "at": Ts(1, 1500), "day": "2024-02-29", "amount": 1e-7},
     [uid(4), "1970-01-01 00:00:01.000002+00", "2024-02-29", "0.0000001"] + [None] * 6),
    # the 96-bit ext before 1970, rounding up into the next second; year 1
    ({"id": uid(5), "at": Ts(-1, 999999999), "day": "0001-01-01", "amount": "1.5e3"},
     [uid(5), "1970-01-01 00:00:00+00", "0001-01-01", "1500"] + [None] * 6),
    # epoch milliseconds before 1970, a day before 2000, a small exponent
    ({"id": uid(6), "at": -1, "day": "1999-12-31", "amount": "1e-3"},
     [uid(6), "1969-12-31 23:59:59.999+00", "1999-12-31", "0.001"] + [None] * 6),
    # a fraction that PostgreSQL rounds into the next second (and year); a negative zero
    ({"id": uid(7), "at": "1999-12-31T23:59:59.9999995Z", "day": Ts(-86400, 0),
      "amount": "-0.00"},
     [uid(7), "2000-01-01 00:00:00+00", "1969-12-31", "0.00"] + [None] * 6),
    # a leap second; a large weight
    ({"id": uid(8), "at": "2016-12-31T23:59:60Z", "amount": "1e100"},
     [uid(8), "2017-01-01 00:00:00+00", None, "1" + "0" * 100] + [None] * 6),
    ({"id": uid(9), "at": "0001-01-01T00:00:00Z",
      "amount": "123456789012345678901234567890.000000000000000000001"},
     [uid(9), "0001-01-01 00:00:00+00", None,
      "123456789012345678901234567890.000000000000000000001"] + [None] * 6),
    # lower-case t and z, 1.5 microseconds: half to even
    ({"id": uid(10), "at": "2026-12-03t14:00:00.0000015z", "amount": 12},
     [uid(10), "2026-12-03 14:00:00.000002+00", None, "12"] + [None] * 6),
    ({"id": uid(11), "at": "2026-12-03 09:30:00-04:30", "amount": -5, "day": None},
     [uid(11), "2026-12-03 14:00:00+00", None, "-5"] + [None] * 6),
]

# (entry, reason, a part of copysink.error); every other field of the entry is valid
BAD = [
    ({"id": "not-a-uuid"}, "invalid_format", 'field "id" is not a uuid'),
    ({"id": b"\x01" * 15}, "invalid_format", 'field "id" is a bin of 15 bytes, a uuid has 16'),
    ({"id": 7}, "wrong_type", 'field "id" must be a uuid string or a bin of 16 bytes, got int'),
    ({"at": "2026-12-03T14:00:00"}, "invalid_format",
     'field "at" has no UTC offset (end it with Z or +HH:MM)'),
    ({"at": "2026-02-30T00:00:00Z"}, "invalid_format", "there is no 2026-02-30"),
    ({"at": "yesterday"}, "invalid_format", 'field "at" is not an RFC 3339 timestamp'),
    ({"at": 2 ** 62}, "out_of_range", 'field "at" is out of range for timestamptz'),
    ({"at": Ts(2 ** 60, 0)}, "out_of_range", 'field "at" is out of range for timestamptz'),
    ({"at": "0000-01-01T00:00:00Z"}, "out_of_range", "year 0000"),
    ({"at": 1.5}, "wrong_type", 'field "at" must be an RFC 3339 string'),
    ({"at": None}, "missing_field", 'missing required field "at"'),
    ({"day": "2026-12-03T00:00:00Z"}, "invalid_format", 'field "day" is not a date'),
    ({"day": 1796256000001}, "invalid_format", 'field "day" is not midnight UTC'),
    ({"day": "2023-02-29"}, "invalid_format", "there is no 2023-02-29"),
    ({"amount": "NaN"}, "not_finite", 'field "amount" is not finite'),
    ({"amount": float("inf")}, "not_finite", 'field "amount" is not finite'),
    ({"amount": "12,5"}, "invalid_format", 'field "amount" is not a decimal number'),
    ({"amount": "1e-20000"}, "out_of_range", "more than 16383 digits after the decimal point"),
    ({"amount": True}, "wrong_type", 'field "amount" must be a decimal string or a number'),
    ({"raw": "text"}, "wrong_type", 'field "raw" must be a bin, got str'),
    ({"scores": [1, "x"]}, "wrong_type", 'field "scores" element 1 is str, not a number'),
    ({"scores": [float("nan")]}, "not_finite", 'field "scores" element 0 is not finite'),
    ({"counts": [2 ** 31]}, "out_of_range",
     'field "counts" element 0 is out of range for integer: 2147483648'),
    ({"counts": [1.5]}, "wrong_type", 'field "counts" element 0 is float, not an integer'),
    ({"counts": [[1]]}, "wrong_type", 'field "counts" element 0 is array, not an integer'),
    ({"big": [2 ** 64 - 1]}, "out_of_range", 'field "big" element 0 is out of range for bigint'),
    ({"doc": {"b": b"\x00"}}, "wrong_type", 'field "doc" holds a bin'),
    ({"doc": [float("nan")]}, "not_finite", 'field "doc" holds NaN or an infinity'),
]


def bad_entry(i, fields):
    """A valid entry with the bad field(s) in; its own id unless the id is what is bad."""
    return {"id": uid(1000 + i), "at": "2026-12-03T14:00:00Z", "label": f"bad {i}", **fields}


def kafka_key(entry):
    return msgpack.packb([entry["id"] if isinstance(entry["id"], str) else "x"])


def execute(conninfo, sql):
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(sql)


def rows(conninfo, sql, params=None):
    """The rows of a query, timestamptz written in UTC."""
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")
        cur.execute(sql, params)
        return cur.fetchall()


def typed_rows(conninfo):
    cols = ", ".join(f"{c}::text" for c in COLUMNS)
    return {r[0]: list(r) for r in rows(conninfo, f"SELECT {cols} FROM typed")}


def test_every_column_type(tmp_path, database, kafka, workers, copysink_bin):
    typed, ledger = kafka.topic("typed"), kafka.topic("ledger")
    kafka.create_topics({typed: 1, typed + ".dlq": 1, ledger: 1, ledger + ".dlq": 1})
    group = "g-" + kafka.prefix
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={},
                          batch={"max_rows": 5000, "linger_ms": 3000,
                                 "write_when_idle": "off"},
                          extra=TYPED_SPEC.format(typed=typed) + LEDGER_SPEC.format(ledger=ledger))
    execute(database, LEDGER_DDL)
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    types = rows(database, "SELECT attname::text, format_type(atttypid, atttypmod) "
                           "FROM pg_attribute WHERE attrelid = 'typed'::regclass "
                           "AND attname::text = ANY(%s) ORDER BY attnum", (COLUMNS,))
    assert types == [("id", "uuid"), ("at", "timestamp with time zone"), ("day", "date"),
                     ("amount", "numeric"), ("raw", "bytea"), ("scores", "double precision[]"),
                     ("counts", "integer[]"), ("big", "bigint[]"), ("doc", "json"),
                     ("label", "text")]
    check = subprocess.run([copysink_bin, "check", "-c", config], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    # one batch: the good entries, one message per bad value, and an array message whose
    # middle entry is bad
    bad = [bad_entry(i, fields) for i, (fields, _, _) in enumerate(BAD)]
    records = [(typed, kafka_key(e), msgpack.packb(e)) for e, _ in GOOD]
    records += [(typed, kafka_key(e), msgpack.packb(e)) for e in bad]
    array = [{"id": uid(50), "at": "2026-12-03T14:00:00Z"},
             {"id": uid(51), "at": "2026-12-03T14:00:00"},
             {"id": uid(52), "at": Ts(0, 0), "amount": "7.70"}]
    records.append((typed, kafka_key(array[0]), msgpack.packb(array)))
    # ledger: the second entry has the first's key (the same day, 1.5 = 1.50, the same
    # instant): one row, the later entry's
    ledger_entries = [
        {"day": "2026-12-03", "amount": "1.5", "at": "2026-12-03T14:00:00Z", "note": "first"},
        {"day": 1796256000000, "amount": "1.50", "at": "2026-12-03T16:00:00+02:00",
         "note": "second"},
        {"day": "2026-12-04", "amount": 2, "at": 0, "note": "other"},
    ]
    records += [(ledger, b"k", msgpack.packb(e)) for e in ledger_entries]
    positions = kafka.produce(records)
    ends = {}
    for topic, part, off in positions:
        ends[(topic, part)] = max(ends.get((topic, part), 0), off + 1)

    w = workers(config).start()
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the worker to store the first batch")
    assert w.alive(), w.log_text()[-3000:]

    got = typed_rows(database)
    expected = {cols[0]: cols for _, cols in GOOD}
    expected[uid(50)] = [uid(50), "2026-12-03 14:00:00+00"] + [None] * 8
    expected[uid(52)] = [uid(52), "1970-01-01 00:00:00+00", None, "7.70"] + [None] * 6
    for key in sorted(set(got) | set(expected)):
        assert got.get(key) == expected.get(key), key
    # strings are read as PostgreSQL reads them
    for entry, _ in GOOD:
        if isinstance(entry["at"], str):
            assert rows(database, "SELECT at = %s::timestamptz, "
                                  "amount::text = %s::numeric::text FROM typed WHERE id = %s",
                        (entry["at"], str(entry["amount"]), entry["id"].lower())) == [
                (True, True)], entry
    assert rows(database, "SELECT day::text, amount::text, at::text, note FROM ledger "
                          "ORDER BY day") == [
        ("2026-12-03", "1.50", "2026-12-03 14:00:00+00", "second"),
        ("2026-12-04", "2", "1970-01-01 00:00:00+00", "other")]

    letters = kafka.read_all(typed + ".dlq", len(BAD) + 1)
    seen = []
    for m in letters:
        h = {k: v.decode() for k, v in m.headers()}
        value = msgpack.unpackb(m.value())
        seen.append((h["copysink.reason"], h["copysink.error"], h.get("copysink.entry"),
                     value.get("label")))
    want = [(reason, f"bad {i}") for i, (_, reason, _) in enumerate(BAD)]
    assert sorted((s[0], s[3]) for s in seen if s[3] is not None) == sorted(want)
    for (fields, reason, error), e in zip(BAD, bad):
        (letter,) = [s for s in seen if s[3] == e["label"]]
        assert letter[0] == reason and error in letter[1], (fields, letter)
        assert letter[2] is None
    (from_array,) = [s for s in seen if s[3] is None]
    assert from_array[:3] == ("invalid_format",
                              'field "at" has no UTC offset (end it with Z or +HH:MM)', "1")

    # the second batch: an update whose only change is the numeric's scale (1.5 = 1.50 in
    # PostgreSQL, yet the later entry's text must win), a delete by a key in upper case, and
    # an update of the ledger row through another spelling of its key
    update = dict(GOOD[0][0], amount="-123.45000")
    more = kafka.produce([
        (typed, kafka_key(update), msgpack.packb(update)),
        (typed, msgpack.packb([uid(11).upper()]), None),
        (ledger, b"k", msgpack.packb({"day": "2026-12-03", "amount": "1.500",
                                      "at": Ts(1796306400, 0), "note": "third"})),
    ])
    for topic, part, off in more:
        ends[(topic, part)] = max(ends[(topic, part)], off + 1)
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the worker to store the second batch")
    assert w.stop() == 0, w.log_text()[-3000:]

    got = typed_rows(database)
    expected[uid(1)] = expected[uid(1)][:3] + ["-123.45000"] + expected[uid(1)][4:]
    del expected[uid(11)]
    assert got == expected
    assert rows(database, "SELECT day::text, amount::text, note FROM ledger ORDER BY day") == [
        ("2026-12-03", "1.50", "third"), ("2026-12-04", "2", "other")]
    assert kafka.read_all(ledger + ".dlq", 0, timeout=1) == []


def test_schema_check_names_the_type(tmp_path, database, kafka, copysink_bin):
    """A table whose column has another type than the spec's is refused by migrate and check,
    naming both."""
    ledger = kafka.topic("ledger")
    kafka.create_topics({ledger: 1})
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group="g-" + kafka.prefix, tables={},
                          extra=LEDGER_SPEC.format(ledger=ledger))
    execute(database, LEDGER_DDL.replace("at timestamptz", "at timestamp"))
    for command in ("migrate", "check"):
        r = subprocess.run([copysink_bin, command, "-c", config], capture_output=True,
                           text=True, timeout=60)
        out = (r.stdout + r.stderr).replace('\\"', '"')  # migrate logs in logfmt
        assert r.returncode == 1, command
        assert ('table "public.ledger" column "at" has type timestamp without time zone, '
                'expected timestamptz') in out, out


FLOATS_SPEC = """
[table floats]
topic = {floats}
on_conflict = update
columns = f double precision not null, r real not null, v text
key = f, r
"""


def test_zero_and_minus_zero_are_one_key(tmp_path, database, kafka, workers, copysink_bin):
    """-0.0 and 0.0 in one batch are one key, as to PostgreSQL's unique index: one row, the
    later entry's (two keys in the batch would make the merge touch the row twice, which
    PostgreSQL refuses)."""
    floats = kafka.topic("floats")
    kafka.create_topics({floats: 1, floats + ".dlq": 1})
    group = "g-" + kafka.prefix
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={}, extra=FLOATS_SPEC.format(floats=floats))
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    # produced before the worker starts, so that they are read into one batch
    entries = [{"f": -0.0, "r": 0.0, "v": "first"}, {"f": 0.0, "r": -0.0, "v": "second"},
               {"f": 1.0, "r": -0.0, "v": "other"}]
    positions = kafka.produce([(floats, b"k", msgpack.packb(e)) for e in entries])
    ends = {(floats, 0): max(off for _, _, off in positions) + 1}
    w = workers(config).start()
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the worker to store the batch")
    assert w.alive(), w.log_text()[-3000:]
    assert w.stop() == 0, w.log_text()[-3000:]
    # one batch of the three entries, two rows once equal keys are merged in the batch
    commits = re.findall(r'msg="batch committed" rows=(\d+)', w.log_text())
    assert commits == ["2"], commits
    assert rows(database, "SELECT f, r, v FROM floats ORDER BY f") == [
        (0.0, 0.0, "second"), (1.0, 0.0, "other")]
    assert kafka.read_all(floats + ".dlq", 0, timeout=1) == []
