"""The packaging in docker/ holds together: the Kubernetes manifests and the compose file parse;
probes name the endpoints the worker serves, on the port its configuration listens on; the
grace period covers the drain; the pod runs as the image's user; the configuration files are
accepted by the worker's own parser. The manifests pass Kubernetes' own schemas (kubernetes-validate, strict); the
Prometheus rules pass promtool and their unit tests, and use only metrics that a live worker
exports. (Nothing here needs a container runtime: test_image.py runs the image.)"""
import configparser
import os
import re
import shutil
import subprocess
import urllib.request

import kubernetes_validate
import pytest
import yaml

from conftest import events_config, free_port, metric, produce_events, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER = os.path.join(ROOT, "docker")
K8S = os.path.join(DOCKER, "k8s")
PROMETHEUS = os.path.join(DOCKER, "prometheus")
RULES = os.path.join(PROMETHEUS, "copysink-alerts.yaml")
RULE_TESTS = os.path.join(PROMETHEUS, "copysink-alerts.test.yaml")
# the Kubernetes release whose API schemas the manifests must pass (bundled with
# kubernetes-validate, pinned in scripts/requirements-test.txt)
KUBERNETES_VERSION = "1.35"


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def manifest_files():
    """The Kubernetes manifests of docker/k8s (kustomization.yaml is kustomize's, not one)."""
    return sorted(n for n in os.listdir(K8S) if n.endswith(".yaml") and n != "kustomization.yaml")


@pytest.fixture(scope="module")
def manifests():
    docs = {}
    for name in manifest_files():
        for doc in yaml.safe_load_all(read("docker", "k8s", name)):
            docs[(doc["kind"], doc["metadata"].get("name", name))] = doc
    return docs


def ini(text):
    """The worker's INI as Python reads it, for cross-checks (the worker's parser is checked
    separately, for real)."""
    cp = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    cp.read_string(text)
    return cp


def configmap_ini(manifests):
    return manifests[("ConfigMap", "copysink")]["data"]["copysink.ini"]


def pod(manifests, kind, name):
    return manifests[(kind, name)]["spec"]["template"]["spec"]


def test_kustomization_lists_every_manifest(manifests):
    kust = yaml.safe_load(read("docker", "k8s", "kustomization.yaml"))
    assert set(kust["resources"]) == set(manifest_files())


def test_probes_match_the_worker(manifests, copysink_bin):
    spec = pod(manifests, "Deployment", "copysink")
    c = spec["containers"][0]
    http_c = read("src", "http.c")
    listen = ini(configmap_ini(manifests))["http"]["listen"]
    port = int(listen.rsplit(":", 1)[1])
    assert listen.startswith("0.0.0.0:"), "inside a pod the endpoint must listen on every address"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert f'"{path}"' in http_c, f"src/http.c does not serve {path}"
        assert ports[get["port"]] == port
    svc = manifests[("Service", "copysink-metrics")]["spec"]
    assert svc["ports"][0]["targetPort"] in ports
    ann = manifests[("Deployment", "copysink")]["spec"]["template"]["metadata"]["annotations"]
    assert int(ann["prometheus.io/port"]) == port and ann["prometheus.io/path"] == "/metrics"


def test_grace_period_covers_the_drain(manifests):
    worker = ini(configmap_ini(manifests))["worker"]
    grace_ms = int(worker.get("shutdown_grace_ms", "20000"))
    period = pod(manifests, "Deployment", "copysink")["terminationGracePeriodSeconds"]
    assert period * 1000 >= grace_ms + 5000, (period, grace_ms)
    compose = yaml.safe_load(read("docker", "compose.yaml"))
    stop = compose["services"]["copysink"]["stop_grace_period"]
    assert int(stop.rstrip("s")) * 1000 >= grace_ms + 5000


def test_pods_run_as_the_image_user(manifests):
    uid = int(re.search(r"useradd .*--uid (\d+)", read("docker", "Dockerfile")).group(1))
    assert re.search(rf"^USER {uid}$", read("docker", "Dockerfile"), re.M)
    for kind, name in (("Deployment", "copysink"), ("Job", "copysink-migrate")):
        spec = pod(manifests, kind, name)
        assert spec["securityContext"]["runAsUser"] == uid
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["enableServiceLinks"] is False
        c = spec["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["envFrom"][0]["secretRef"]["name"] == "copysink-postgres"
        assert spec["volumes"][0]["configMap"]["name"] == "copysink"
    secret = manifests[("Secret", "copysink-postgres")]
    assert set(secret["stringData"]) == {"PGPASSWORD"}


def test_selectors_match_the_pods(manifests):
    labels = manifests[("Deployment", "copysink")]["spec"]["template"]["metadata"]["labels"]
    for sel in (manifests[("Deployment", "copysink")]["spec"]["selector"]["matchLabels"],
                manifests[("PodDisruptionBudget", "copysink")]["spec"]["selector"]["matchLabels"],
                manifests[("Service", "copysink-metrics")]["spec"]["selector"]):
        assert sel.items() <= labels.items()
    assert manifests[("PodDisruptionBudget", "copysink")]["spec"]["maxUnavailable"] == 1


def test_compose_file(manifests):
    compose = yaml.safe_load(read("docker", "compose.yaml"))
    services = compose["services"]
    for name in ("migrate", "copysink"):
        s = services[name]
        assert s["build"]["dockerfile"] == "docker/Dockerfile"
        assert os.path.normpath(os.path.join(DOCKER, s["build"]["context"])) == ROOT
        host_path, target, _ = s["volumes"][0].split(":")
        assert os.path.isfile(os.path.join(DOCKER, host_path))
        assert target == "/etc/copysink/copysink.ini"
        assert "PGPASSWORD" in s["environment"]
    cfg = ini(read("docker", "compose.ini"))
    port = cfg["http"]["listen"].rsplit(":", 1)[1]
    assert services["copysink"]["ports"][0].endswith(f":{port}")
    assert cfg["kafka"]["bootstrap.servers"].split(":")[0] == "kafka"
    assert "host=postgres" in cfg["postgres"]["conninfo"]
    assert "password" not in cfg["postgres"]["conninfo"]
    topics = services["topics"]["command"][0]
    for section in cfg.sections():
        if section.startswith("table "):
            assert cfg[section]["topic"] in topics


@pytest.mark.parametrize("which", ["configmap", "compose"])
def test_configs_accepted_by_the_worker(tmp_path, manifests, copysink_bin, which):
    """The worker's own parser reads the file: --print-config prints the effective
    configuration before the checks (which fail here: the hosts are not in this network); a
    configuration error would exit 2 before printing."""
    text = configmap_ini(manifests) if which == "configmap" else read("docker", "compose.ini")
    path = tmp_path / "copysink.ini"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPYSINK_")}
    env["COPYSINK_KAFKA_SOCKET_TIMEOUT_MS"] = "2000"
    r = subprocess.run([copysink_bin, "check", "--print-config", "-c", str(path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 2, r.stderr
    assert re.search(r"^listen = 0\.0\.0\.0:9187", r.stdout, re.M), r.stdout
    for section in ini(text).sections():
        assert f"[{section}]" in r.stdout


def schema_problems(path, strict=True):
    """What Kubernetes KUBERNETES_VERSION's API schemas say of every document of the file, one
    line per problem; strict refuses fields the API does not have."""
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    assert docs, f"{path} holds no document"
    problems = []
    for doc in docs:
        try:
            version = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=strict)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.absolute_path)
            problems.append(f"{os.path.basename(path)}: {doc['kind']} {where}: {e.message}")
            continue
        # validate() falls back to an older bundled release when it lacks the one asked for
        assert version == KUBERNETES_VERSION, f"kubernetes-validate has no {KUBERNETES_VERSION}"
    return problems


@pytest.mark.parametrize("name", manifest_files())
def test_manifest_passes_the_kubernetes_schema(name):
    assert schema_problems(os.path.join(K8S, name)) == []
    assert f"Kubernetes {KUBERNETES_VERSION}" in read("docker", "README.md")


@pytest.mark.parametrize("field,typo", [("readinessProbe:", "readinesProbe:"),
                                        ("readOnly: true", "readonly: true")],
                         ids=["container", "volume-mount"])
def test_schema_check_rejects_a_misspelled_field(tmp_path, field, typo):
    """The check above can fail: the Deployment with a field misspelled (a container's, a
    volume mount's) is refused in strict mode, though the lenient schemas let it through."""
    text = read("docker", "k8s", "deployment.yaml")
    assert text.count(field) == 1
    path = tmp_path / "deployment.yaml"
    path.write_text(text.replace(field, typo))
    assert schema_problems(path, strict=False) == []
    problems = schema_problems(path)
    assert len(problems) == 1 and f"'{typo.split(':')[0]}' was unexpected" in problems[0], problems


def promtool(*args, stdin=None):
    """Run promtool (Debian package prometheus); fails, never skips, when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: scripts/setup.sh installs it (package prometheus)")
    return subprocess.run([path, *args], input=stdin, capture_output=True, text=True,
                          timeout=120)


def rules():
    with open(RULES) as f:
        return [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]


def test_alert_rules_pass_promtool():
    r = promtool("check", "rules", RULES)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules())} rules found" in r.stdout, r.stdout
    r = promtool("test", "rules", RULE_TESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout, r.stdout


def test_every_alert_is_tested_documented_and_labelled():
    """Each alert has a unit test where it fires and one where it stays silent, a severity,
    a summary and a description that send the reader to docs/OPERATIONS.md, whose "Alerts"
    section explains it."""
    with open(RULE_TESTS) as f:
        cases = [c for t in yaml.safe_load(f)["tests"] for c in t.get("alert_rule_test", [])]
    ops = read("docs", "OPERATIONS.md")
    alerts_section = ops.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    names = [r["alert"] for r in rules() if "alert" in r]
    assert len(names) == 5
    for r in rules():
        if "alert" not in r:
            continue
        name = r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical"), name
        assert r["annotations"]["summary"], name
        assert "docs/OPERATIONS.md" in r["annotations"]["description"], name
        assert f"`{name}`" in alerts_section, f"{name} is not explained in OPERATIONS.md"
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"no test where {name} fires"
        assert any(not c["exp_alerts"] for c in mine), f"no test where {name} stays silent"


# PromQL words that are neither metrics nor labels
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"


def promql_names(expr):
    """(metric names, label names of groupings and matchers) in a PromQL expression: the
    identifiers left once strings, matchers, ranges, durations and groupings are taken out,
    less the functions (a name followed by a parenthesis) and PromQL's own words."""
    labels = set()
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for m in re.finditer(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*[=!]", m.group(1)))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\boffset\s+\d+[smhdwy]", " ", expr)
    for m in re.finditer(GROUPING, expr):
        labels |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    expr = re.sub(GROUPING, " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if m.group(0).lower() in PROMQL_WORDS or re.match(r"\s*\(", expr[m.end():]):
            continue
        names.add(m.group(0))
    return names, labels


def test_promql_names_reads_the_rules_shapes():
    assert promql_names('sum by (job, topic) (max by (job, partition) (a_b)) > 1000') == \
        ({"a_b"}, {"job", "topic", "partition"})
    assert promql_names('min_over_time(x:y:z[5m]) > max_over_time(x:y:z[5m] offset 10m)') == \
        ({"x:y:z"}, set())
    assert promql_names('time() - c > 300 and on (job, instance) up{job="copysink"} == 0') == \
        ({"c", "up"}, {"job", "instance"})


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_rules_use_what_a_live_worker_exports(tmp_path, database, kafka, workers, copysink_bin):
    """A worker that has committed entries and dead-lettered one: every metric the rules read
    (besides Prometheus' own `up` and the rules' own records) is in its /metrics, with the
    labels the rules group by (besides `job` and `instance`, which Prometheus adds), and
    `promtool check metrics` finds nothing to say about the scrape."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 2, topic + ".dlq": 1})
    port = free_port()
    config = events_config(tmp_path, "w.ini", kafka=kafka, conninfo=database, topic=topic,
                           group="g-" + kafka.prefix, http_listen=f"127.0.0.1:{port}")
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    produce_events(kafka, topic, range(40))
    kafka.produce([(topic, None, b"\xc1")])  # not msgpack: a dead letter
    w = workers(config).start()

    def caught_up():
        assert w.alive(), w.log_text()[-3000:]
        if metric(port, "copysink_up") != 1:
            return False
        body = scrape(port)
        lags = re.findall(r"^copysink_partition_lag\{.*\} (\S+)$", body, re.M)
        return len(lags) == 2 and all(v == "0" for v in lags) and \
            re.search(r'^copysink_dead_letters_total\{reason="malformed"\} 1$', body, re.M)

    wait_for(caught_up, 120, "the worker to commit every entry and dead-letter one")
    body = scrape(port)
    exported = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
    sample_labels = {}
    for name, labels in re.findall(r"^([a-z_]+)\{(.*)\} \S+$", body, re.M):
        sample_labels.setdefault(name, set()).update(re.findall(r'([a-z_]+)="', labels))
    records = {r["record"] for r in rules() if "record" in r}
    used, grouped = set(), set()
    for r in rules():
        names, labels = promql_names(r["expr"])
        used |= names
        grouped |= labels
    assert "copysink_partition_lag" in used and "up" in used
    assert used - records - {"up"} <= exported, used - records - {"up"} - exported
    worker_labels = set().union(*(sample_labels.get(n, set()) for n in used))
    assert grouped - {"job", "instance"} <= worker_labels, grouped - worker_labels
    r = promtool("check", "metrics", stdin=body)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    assert w.stop() == 0
