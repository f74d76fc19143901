"""`copysink check` names what is wrong: broker unreachable, topic unknown, table missing or of
another shape, a privilege missing; and says ok when nothing is."""
import subprocess

import psycopg2

from conftest import write_config


def check(copysink_bin, config):
    r = subprocess.run([copysink_bin, "check", "-c", config], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


def setup(tmp_path, database, kafka, copysink_bin, *, bootstrap=None, conninfo=None,
          create_topic=True):
    topic = kafka.topic("entries")
    if create_topic:
        kafka.create_topics({topic: 2})
    config = write_config(tmp_path / "c.ini", bootstrap=bootstrap or kafka.bootstrap,
                          conninfo=conninfo or database, group="g-" + kafka.prefix,
                          tables={"memory_entries": (topic, "update")})
    return topic, config


def migrate(copysink_bin, config):
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True, capture_output=True)


def execute(conninfo, *statements):
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def test_all_good(tmp_path, database, kafka, copysink_bin):
    topic, config = setup(tmp_path, database, kafka, copysink_bin)
    migrate(copysink_bin, config)
    rc, out = check(copysink_bin, config)
    assert rc == 0, out
    assert 'ok: table "public.memory_entries" matches its spec' in out
    assert f'ok: topic "{topic}" has 2 partition(s)' in out
    assert out.rstrip().endswith("ok: 0 problem(s)"), out


def test_table_missing_and_topic_unknown(tmp_path, database, kafka, copysink_bin):
    topic, config = setup(tmp_path, database, kafka, copysink_bin, create_topic=False)
    rc, out = check(copysink_bin, config)
    assert rc == 1
    assert 'table "public.memory_entries" does not exist' in out, out
    assert f'error: topic "{topic}" of table "memory_entries" does not exist' in out, out
    assert 'table "copysink_offsets"' in out, out


def test_table_of_another_shape(tmp_path, database, kafka, copysink_bin):
    _, config = setup(tmp_path, database, kafka, copysink_bin)
    migrate(copysink_bin, config)
    execute(database, "ALTER TABLE memory_entries ALTER COLUMN value TYPE integer USING 0")
    rc, out = check(copysink_bin, config)
    assert rc == 1
    assert ('error: table "public.memory_entries" column "value" has type integer, '
            'expected text') in out, out


def test_privilege_missing(tmp_path, database, kafka, copysink_bin):
    _, config = setup(tmp_path, database, kafka, copysink_bin)
    migrate(copysink_bin, config)
    role = "cs_writer_" + kafka.prefix.replace("-", "_").replace(".", "_")
    execute(database, f"DROP ROLE IF EXISTS {role}",
            f"CREATE ROLE {role} LOGIN",
            f"GRANT SELECT, INSERT, UPDATE ON memory_entries TO {role}",
            f"GRANT SELECT, INSERT, UPDATE ON copysink_offsets TO {role}")
    try:
        _, config = setup(tmp_path, database, kafka, copysink_bin,
                          conninfo=f"{database} user={role}", create_topic=False)
        rc, out = check(copysink_bin, config)
        assert rc == 1
        # tombstones delete rows: DELETE is needed on a table with a key, not on the offsets
        assert (f'error: role "{role}" lacks privilege DELETE on table '
                '"public.memory_entries"') in out, out
        assert 'ok: table "copysink_offsets" present' in out, out
        assert "1 problem(s)" in out, out
    finally:
        execute(database, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


def test_broker_unreachable(tmp_path, database, kafka, copysink_bin):
    _, config = setup(tmp_path, database, kafka, copysink_bin, bootstrap="127.0.0.1:1")
    migrate(copysink_bin, config)
    rc, out = check(copysink_bin, config)
    assert rc == 1
    assert "error: Kafka brokers unreachable" in out, out
    assert 'ok: table "public.memory_entries" matches its spec' in out, out


def test_help_of_every_command(copysink_bin):
    """`copysink CMD --help` prints that command's usage and options on stdout, exit 0; an
    unknown option is a usage error (exit 2) that points to the command's help."""
    specific = {"run": ["--set"], "migrate": ["pgvector"], "check": ["privileges"],
                "produce": ["--table T", "--topic X"],
                "replay": ["--from earliest", "--until end", "--tables T1,T2"]}
    for cmd, words in specific.items():
        out = subprocess.run([copysink_bin, cmd, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"Usage: copysink {cmd} "), out.stdout
        for w in words + ["--config FILE", "Exit status"]:
            assert w in out.stdout, (cmd, w)
        bad = subprocess.run([copysink_bin, cmd, "--no-such-option"], capture_output=True,
                             text=True)
        assert bad.returncode == 2
        assert f'"copysink {cmd} --help"' in bad.stderr, bad.stderr
    top = subprocess.run([copysink_bin, "--help"], capture_output=True, text=True)
    assert top.returncode == 0 and all(f"copysink {c}" in top.stdout for c in specific)
