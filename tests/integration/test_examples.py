"""The producer examples of docs/examples, run as a user would run them against the real
broker; the worker loads what they sent, and every table holds exactly their entries (values,
embeddings from both the array and the compact form, NULLs for what they leave out)."""
import importlib.util
import os
import shutil
import struct
import subprocess
import sys

from conftest import stored_offsets, wait_for, write_config
from entries import assert_table_equals, key_of

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(ROOT, "docs", "examples")
TABLES = ("memory_entries", "patterns", "trajectories")


def python_example():
    spec = importlib.util.spec_from_file_location(
        "produce_example", os.path.join(EXAMPLES, "python", "produce.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def expected():
    """{table: {key: entry}} from the Python example's own entries (the Node.js example sends
    the same ones), compact embeddings turned back into floats."""
    out = {}
    for table, (single, grouped, with_compact) in python_example().example_entries().items():
        rows = {}
        for entry in [single, *grouped, with_compact]:
            entry = dict(entry)
            if isinstance(entry.get("embedding"), bytes):
                b = entry["embedding"]
                entry["embedding"] = list(struct.unpack(f"<{len(b) // 4}f", b))
            rows[key_of(table, entry)] = entry
        out[table] = rows
    return out


def run_example(cmd, cwd, kafka, tmp_path, database, workers, copysink_bin):
    topics = {t: kafka.topic(t) for t in TABLES}
    kafka.create_topics({topic: 3 for topic in topics.values()})
    env = dict(os.environ, KAFKA_BOOTSTRAP=kafka.bootstrap,
               **{f"TOPIC_{t.upper()}": topic for t, topic in topics.items()})
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    group = "g-" + kafka.prefix
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={t: (topics[t], "update") for t in TABLES})
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    ends = {}
    for topic in topics.values():
        ends.update({(topic, p): o for p, o in kafka.end_offsets(topic).items() if o > 0})
    assert ends, "the example sent nothing"
    w = workers(config).start()
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 60,
             "the worker to load the example's entries")
    log = w.log_text()
    assert w.stop() == 0, log[-3000:]
    assert "entry dead-lettered" not in log, log[-3000:]
    for table, rows in expected().items():
        assert_table_equals(database, table, rows)


def test_python_example(tmp_path, database, kafka, workers, copysink_bin):
    run_example([sys.executable, os.path.join(EXAMPLES, "python", "produce.py")], tmp_path,
                kafka, tmp_path, database, workers, copysink_bin)


def test_node_example(tmp_path, database, kafka, workers, copysink_bin):
    """npm installs the example's pinned dependencies from the npm registry (the optional LZ4
    codec left out: it builds a native module; the example falls back to gzip)."""
    npm, node = shutil.which("npm"), shutil.which("node")
    assert npm and node, "Node.js and npm are needed (scripts/setup.sh installs them)"
    work = tmp_path / "node"
    shutil.copytree(os.path.join(EXAMPLES, "node"), work,
                    ignore=shutil.ignore_patterns("node_modules"))
    out = subprocess.run([npm, "install", "--omit=optional", "--no-audit", "--no-fund",
                          "--loglevel=error"], cwd=work, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    run_example([node, "produce.js"], work, kafka, tmp_path, database, workers, copysink_bin)
