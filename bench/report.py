"""results.md, made from results.json alone: every figure printed is read from it."""
import os

import summarize


def n0(x):
    return "–" if x is None else f"{x:,.0f}"


def n2(x):
    return "–" if x is None else f"{x:.2f}"


def n1(x):
    return "–" if x is None else f"{x:.1f}"


def met(v):
    return "not measured" if v is None else ("yes" if v else "**no**")


def cmp_row(name, c, a_fmt=n0, ratio_fmt=n2, target=None):
    a, b = c["a"], c["b"]
    t = c.get("target") if target is None else target
    m = None if t is None or c["ratio_of_medians"] is None else c["ratio_of_medians"] >= t
    return (f"| {name} | {a_fmt(a['median'])} | {a_fmt(a['min'])} | {a_fmt(a['max'])} "
            f"| {a_fmt(b['median'])} | {a_fmt(b['min'])} | {a_fmt(b['max'])} "
            f"| {ratio_fmt(c['ratio_of_medians'])} | {ratio_fmt(c['ratio_min'])}–"
            f"{ratio_fmt(c['ratio_max'])} | {ratio_fmt(c['ratio_of_best'])} "
            f"| ≥ {ratio_fmt(t) if t is not None else '–'} | {met(m)} |")


CMP_HEAD = ["| comparison | copysink rows/s median | min | max | baseline rows/s median | min "
            "| max | ratio of medians | ratio per round, min–max | best / best | target | met |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]


def writers_used(c):
    ws = sorted({str(p["a"].get("writers")) for p in c["rounds"]})
    src = sorted({p["a"].get("writers_source", "?") for p in c["rounds"]})
    return f"{', '.join(ws)} (read from {'; '.join(src)})"


def rounds_table(name, c):
    lines = [f"Every round of {name} (rows/s; * ran first):", "",
             "| round | copysink | baseline | ratio | baseline matched to round |",
             "|---:|---:|---:|---:|---:|"]
    for p in c["rounds"]:
        fa, fb = ("*", "") if p["first"] == "a" else ("", "*")
        lines.append(f"| {p['round']} | {n0(p['a']['rows_per_s'])}{fa} "
                     f"| {n0(p['b']['rows_per_s'])}{fb} | {n2(p['ratio'])} "
                     f"| {p.get('b_matched_to_round', '')} |")
    return lines + [""]


def headline(res):
    h = res.get("headline")
    lines = []
    if h:
        r = len(h["new"]["rounds"])
        conns = sorted({p["b"]["connections"] for p in h["new"]["rounds"]})
        bsz = sorted({p["b"]["batch_rows"] for p in h["update"]["rounds"]})
        conns_u = sorted({p["b"]["connections"] for p in h["update"]["rounds"]})
        lines += [f"### Headline: {SETTINGS['label']}, {r} paired rounds, {res['entries']:,} entries",
                  "", *CMP_HEAD,
                  cmp_row(f"new keys vs raw binary COPY ({'/'.join(map(str, conns))} "
                          "connection(s))", h["new"]),
                  cmp_row(f"update vs hand merge ({'/'.join(map(str, conns_u))} connection(s), "
                          f"{'/'.join(map(str, bsz))} rows per transaction)", h["update"])]
    sd = res.get("seed")
    if sd:
        m = sd["rounds"][0]["b"]["rows"]
        if not h:
            lines += ["### Headline", "", *CMP_HEAD]
        lines.append(cmp_row(f"new keys vs the seed's StringIO COPY + ON CONFLICT ({m:,} "
                             "entries)", sd, ratio_fmt=n1))
    p = res.get("peer")
    if p and p.get("measured"):
        for key, label in (("new", "new keys"), ("update", "update")):
            lines.append(cmp_row(f"peer, {label} vs Debezium JDBC sink ({p['entries']:,} "
                                 "entries)", p[key], ratio_fmt=n1))
    if not lines:
        return []
    lines += [""]
    if h:
        lines += [f"Writers copysink used at the defaults: new keys {writers_used(h['new'])}; "
                  f"update {writers_used(h['update'])}. The raw COPY and the hand merge use as "
                  "many connections, each loading its share (every k-th row). The hand merge's "
                  "rows per transaction: " +
                  "; ".join(sorted({p['b']['batch_rows_from'] for p in h['update']['rounds']}))
                  + ".", ""]
        lines += rounds_table("new keys", h["new"]) + rounds_table("update", h["update"])
    if sd:
        lines += rounds_table("the seed comparison", sd)
    si = res.get("seed_inserts")
    if si:
        s = si["summary"]
        lines += [f"The seed's individual INSERTs ({si['entries']:,} entries): median "
                  f"{n0(s['median'])} rows/s (min {n0(s['min'])}, max {n0(s['max'])}), "
                  f"{len(si['rounds'])} rounds.", ""]
    return lines


def peer(res):
    p = res.get("peer")
    if p is None:
        return []
    if not p.get("measured"):
        return [f"### Peer: not measured ({p.get('reason')})", ""]
    lines = [f"### Peer: Debezium JDBC sink, {p['entries']:,} entries, "
             f"{len(p['new']['rounds'])} paired rounds", "",
             "| case | copysink rows/s | peer rows/s | ratio of medians | target | met "
             "| copysink peak RSS MB | peer peak RSS MB | peer / copysink RSS | target | met |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for key, label in (("new", "new keys"), ("update", "update")):
        c = p[key]
        ra, rb = c["rss_a"]["median"], c["rss_b"]["median"]
        lines.append(
            f"| {label} | {n0(c['a']['median'])} ({n0(c['a']['min'])}–{n0(c['a']['max'])}) "
            f"| {n0(c['b']['median'])} ({n0(c['b']['min'])}–{n0(c['b']['max'])}) "
            f"| {n1(c['ratio_of_medians'])} | ≥ {n1(c['target'])} "
            f"| {met(None if c['ratio_of_medians'] is None else c['ratio_of_medians'] >= c['target'])} "
            f"| {n0(ra / 1024 if ra else None)} | {n0(rb / 1024 if rb else None)} "
            f"| {n1(c['rss_ratio_of_medians'])} | ≥ {n1(c['rss_target'])} "
            f"| {met(None if c['rss_ratio_of_medians'] is None else c['rss_ratio_of_medians'] >= c['rss_target'])} |")
    return lines + ["", "Medians over the rounds (min–max in brackets); RSS: VmHWM of the worker "
                    "and the peer's reported peak.", ""]


def writers(res):
    ws = res.get("writers")
    if not ws:
        return []
    a1, b1 = ws[0]["a"]["median"], ws[0]["b"]["median"]
    lines = [f"### Several writers: [postgres] writers = N against N raw COPYs at once "
             f"({len(ws[0]['rounds'])} paired rounds, new keys)", "",
             "| writers | copysink rows/s median (min–max) | x first | peak RSS MB (max) "
             "| raw COPY rows/s median (min–max) | x first | ratio of medians | target | met |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for w in ws:
        rss = max(p["a"]["peak_rss_kb"] for p in w["rounds"]) / 1024
        lines.append(
            f"| {w['writers']} | {n0(w['a']['median'])} ({n0(w['a']['min'])}–"
            f"{n0(w['a']['max'])}) | {n2(w['a']['median'] / a1)} | {n0(rss)} "
            f"| {n0(w['b']['median'])} ({n0(w['b']['min'])}–{n0(w['b']['max'])}) "
            f"| {n2(w['b']['median'] / b1)} | {n2(w['ratio_of_medians'])} | ≥ {n2(w['target'])} "
            f"| {met(w['ratio_of_medians'] >= w['target'])} |")
    return lines + [""]


def memory(res):
    m = res.get("memory")
    if not m:
        return []
    by = ", ".join(f"{k} {v:.0f}" for k, v in m["by_phase_mb"].items())
    return ["### Memory", "",
            f"Peak RSS (VmHWM) of the worker over its {m['runs']} runs at the defaults: "
            f"{m['peak_mb']:.1f} MB ({m['peak_run']}); the bound 3 x max_bytes + 32 MB = "
            f"{n0(m['cap_mb'])} MB (max_bytes {n0(m['max_bytes'])} from the worker's start "
            f"line): {met(m['met'])}. Highest per phase (MB): {by}.", ""]


def latency(res):
    lat = res.get("latency")
    if not lat:
        return []
    if not lat.get("measured"):
        return [f"### Latency: not measured ({lat.get('reason')})", ""]
    s = lat["summary"]
    linger = max((r.get("linger_ms") or 0) for r in lat["rounds"])
    lines = [f"### Latency at {lat['rate']:,.0f} entries/s ({lat['rate_source']}), "
             f"{SETTINGS['label']}, {len(lat['rounds'])} rounds of {lat['seconds']:g} s", "",
             f"p99 produce -> commit: median of the rounds {n0(s['median'])} ms (min "
             f"{n0(s['min'])}, max {n0(s['max'])}); target ≤ linger_ms + 100 = {linger + 100} ms: "
             f"{met(s['median'] <= linger + 100)}. p50: median {n0(lat['p50_summary']['median'])} "
             "ms.", "",
             "| round | p50 ms | p99 ms | entries | batches | rows per batch p50 | batch ms p99 "
             "| peak RSS MB |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in lat["rounds"]:
        b = r.get("batches", {})
        lines.append(f"| {r['round']} | {n0(r['p50_ms'])} | {n0(r['p99_ms'])} | {r['samples']} "
                     f"| {b.get('n', '–')} | {b.get('rows_p50', '–')} | {b.get('ms_p99', '–')} "
                     f"| {n0(r['peak_rss_kb'] / 1024)} |")
    return lines + [""]


def optional(res):
    """The optional phases: toast, batch, staging."""
    lines = []
    t = res.get("toast")
    if t:
        lines += [f"### TOAST check: raw COPY of {t['entries']:,} rows with the value longer by "
                  "0, 60 or 120 words, toast_tuple_target = 8160 (copysink migrate's) against "
                  f"PostgreSQL's default threshold, {len(t['widths'][0]['rounds'])} paired "
                  "rounds", "",
                  "| extra words | bytes per row | toast_tuple_target rows/s | its TOAST MB "
                  "| default rows/s | default TOAST MB | ratio of medians |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for w in t["widths"]:
            p = w["rounds"][-1]
            lines.append(f"| {w['extra_words']} | {n0(p['a']['row_bytes'])} "
                         f"| {n0(w['a']['median'])} | {n0(p['a']['toast_bytes'] / 1048576)} "
                         f"| {n0(w['b']['median'])} | {n0(p['b']['toast_bytes'] / 1048576)} "
                         f"| {n2(w['ratio_of_medians'])} |")
        lines.append("")
    b = res.get("batch")
    if b:
        lines += ["### Batch size: max_rows alone bounds the batch (max_bytes 256 MB, the "
                  "consumer's queue as the default max_bytes gives it), new keys", "",
                  "| max_rows | rows/s median (min–max) | peak RSS MB (max) |", "|---:|---:|---:|"]
        for x in b:
            lines.append(f"| {x['max_rows']} | {n0(x['rows_per_s']['median'])} "
                         f"({n0(x['rows_per_s']['min'])}–{n0(x['rows_per_s']['max'])}) "
                         f"| {n0(x['peak_rss_kb']['max'] / 1024)} |")
        lines.append("")
    if res.get("staging"):
        lines += [f"### staging = session against transaction: {res['logs']}/staging.md", ""]
    a = res.get("ab")
    if a:
        b_set = ", ".join(f"[{sec}] {k} = {v}" for sec, kv in a["b_settings"].items()
                          for k, v in kv.items())
        lines += [f"### A/B: the defaults (A) against {b_set} (B), "
                  f"{len(a['new']['rounds'])} paired rounds", "",
                  "| case | A rows/s median (min–max) | B rows/s median (min–max) | A / B "
                  "(ratio of medians) | A peak RSS MB (max) | B peak RSS MB (max) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for case in ("new", "update"):
            r = a[case]
            lines.append(f"| {case} | {n0(r['a']['median'])} ({n0(r['a']['min'])}–"
                         f"{n0(r['a']['max'])}) | {n0(r['b']['median'])} ({n0(r['b']['min'])}–"
                         f"{n0(r['b']['max'])}) | {n2(r['ratio_of_medians'])} "
                         f"| {n0(r['a_peak_rss_kb']['max'] / 1024)} "
                         f"| {n0(r['b_peak_rss_kb']['max'] / 1024)} |")
        lines.append("")
    return lines


def cpu(res):
    kinds = res.get("cpu_per_100k")
    if not kinds:
        return []
    note = "" if res.get("broker_cpu_measured") else " (the broker's pid was not given: –)"
    lines = ["### CPU seconds per 100,000 rows (user + system; medians of the runs)" + note, "",
             "| run | runs | worker | broker | PostgreSQL | all three |",
             "|---|---:|---:|---:|---:|---:|"]
    for k in kinds:
        parts = [k["worker"], k["broker"], k["postgres"]]
        total = sum(p for p in parts if p is not None) if any(parts) else None
        lines.append(f"| {k['kind']} | {k['runs']} | {n2(k['worker'])} | {n2(k['broker'])} "
                     f"| {n2(k['postgres'])} | {n2(total)} |")
    return lines + ["", "worker: copysink's process (for the peer: the JVM it reports); broker: "
                    "the Kafka JVM; PostgreSQL: the postmaster and all its children (backends "
                    "that exit count through the postmaster's reaped time), less the harness's "
                    "own polling backend. The raw COPY, the merge and the seed have no worker "
                    "(their Python client is not counted).", ""]


def tfmt(t):
    """Ratios near 1 with two decimals, large ones with one, MB and ms whole."""
    if t["unit"] == "x":
        return n2 if (t["required"] or 0) < 5 else n1
    return n0


def targets(res):
    lines = ["### Targets", "", "| target | measured | required | met |", "|---|---:|---:|---|"]
    for t in res.get("targets", []):
        fmt = tfmt(t)
        req = "–" if t["required"] is None else f"{t['op']} {fmt(t['required'])}"
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(f"| {t['target']} | {fmt(t['measured'])} | {req} | {met(t['met'])}{note} |")
    return lines + [""]


# how the results name the worker's settings: "the defaults" unless --set gave some
SETTINGS = {"label": "the defaults"}


def render(results):
    run = results["run"]
    SETTINGS["label"] = ("the defaults" if not run.get("overrides") else
                         "settings " + ", ".join(f"[{sec}] {k} = {v}" for sec, kv in
                                                 run["overrides"].items() for k, v in kv.items()))
    lines = []
    title = "# copysink benchmark"
    if run.get("quick"):
        title += " — QUICK RUN (development only: not figures for the docs)"
    lines += [title, "",
              f"{run['entries']:,} headline entries, {run['rounds']} paired rounds per "
              f"comparison (A first in odd rounds, B in even ones); "
              f"{run['msgpack_bytes_per_row']:.0f} bytes of msgpack per entry; "
              f"{run['copysink_version']}; {run['machine']['cpus']} CPUs; {run['date']}."
              + (f" Settings given for every run: {run['overrides']}." if run.get("overrides")
                 else " copysink runs at the defaults write no setting but the brokers, group, "
                      "conninfo, table and topic (and the metrics endpoint off)."), ""]
    for key, res in results["servers"].items():
        lines += [f"## {key}: PostgreSQL {res['postgres']}, embedding {res['embedding_column']}"
                  + (f", pgvector {res['pgvector']}" if res.get("pgvector") else ""),
                  "", f"{res['copy_bytes_per_row']:.0f} bytes of binary COPY per row.", ""]
        lines += headline(res) + peer(res) + writers(res) + memory(res) + latency(res)
        lines += optional(res)
        lines += cpu(res) + targets(res)
        if res.get("errors"):
            lines += ["### Phases that failed (their figures are missing above)", ""]
            lines += [f"- {ph}: {msg}" for ph, msg in res["errors"].items()] + [""]
    servers = list(results["servers"])
    if len(servers) > 1:
        lines += ["## Targets, every server", "",
                  "| target | required | " + " | ".join(servers) + " |",
                  "|---|---:|" + "---|" * len(servers)]
        names = []
        for res in results["servers"].values():
            names += [t["target"] for t in res.get("targets", []) if t["target"] not in names]
        for name in names:
            cells, req = [], "–"
            for res in results["servers"].values():
                t = next((x for x in res.get("targets", []) if x["target"] == name), None)
                if t is None:
                    cells.append("–")
                    continue
                fmt = tfmt(t)
                if t["required"] is not None:
                    req = f"{t['op']} {fmt(t['required'])}"
                cells.append(f"{fmt(t['measured'])}: {met(t['met'])}")
            lines.append(f"| {name} | {req} | " + " | ".join(cells) + " |")
        lines.append("")
    sec = results.get("seconds", {})
    if sec:
        lines += ["## Time per phase (s)", "", "| server | phase | seconds |", "|---|---|---:|"]
        if "shared prepare" in sec:
            lines.append(f"| all | entries and topics | {sec['shared prepare']:.0f} |")
        for key, ph in sec.get("servers", {}).items():
            lines += [f"| {key} | {p} | {v:.0f} |" for p, v in ph.items()]
        if "total" in sec:
            lines.append(f"| all | total | {sec['total']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def write(results, out):
    summarize.run(results)
    text = render(results)
    print(text)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
