#!/usr/bin/env python3
"""Print the Markdown table of chaos-test runs for docs/RELIABILITY.md from their report files
(COPYSINK_CHAOS_REPORT of tests/integration/test_chaos.py), so that the figures in the doc
are the ones the runs wrote.

    scripts/chaos_table.py docs/results/chaos_run*.json
"""
import json
import sys

COLUMNS = [("run", None), ("commit", "commit"), ("seed", "seed"), ("s", "seconds"),
           ("entries", "entries"), ("SIGKILLs", "kills"),
           ("PG restarts", "postgres_immediate_restarts"), ("broker restarts", "kafka_restarts"),
           ("retries across a rebalance", "rebalances_during_a_retry"),
           ("restarts in a rebalance", "restarts_during_a_rebalance"),
           ("lost", "lost"), ("duplicated", "duplicated"), ("dead-lettered", "dead_lettered"),
           ("stored = end", "stored_offsets_equal_end_offsets")]


def main(paths):
    print("| " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for n, path in enumerate(paths, 1):
        with open(path) as f:
            report = json.load(f)
        cells = [str(n)] + [str(report.get(key, "")) for _, key in COLUMNS[1:]]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
