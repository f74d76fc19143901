"""The packaging in docker/ holds together: the Kubernetes manifests and the compose file parse;
probes name the endpoints the worker serves, on the port its configuration listens on; the
grace period covers the drain; the pod runs as the image's user; the configuration files are
accepted by the worker's own parser; the image's runtime packages provide every library the
binary needs. (Nothing here needs a container runtime.)"""
import configparser
import os
import re
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER = os.path.join(ROOT, "docker")
K8S = os.path.join(DOCKER, "k8s")


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


@pytest.fixture(scope="module")
def manifests():
    docs = {}
    for name in sorted(os.listdir(K8S)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
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
    files = {n for n in os.listdir(K8S) if n.endswith(".yaml") and n != "kustomization.yaml"}
    assert set(kust["resources"]) == files


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


def test_image_runtime_packages_provide_the_libraries(copysink_bin):
    """Every shared library the binary needs belongs to a package of the runtime stage (or to
    libc6, in every Debian image). Sanitizer runtimes only appear in the sanitizer build."""
    dockerfile = read("docker", "Dockerfile")
    runtime = dockerfile.split("FROM debian:bookworm-slim\n", 1)[1]
    packages = set(re.findall(r"\b(lib[a-z0-9.+-]+)\b", runtime.split("&&")[1])) | {"libc6"}
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                        subprocess.run(["readelf", "-d", copysink_bin], capture_output=True,
                                       text=True, check=True).stdout)
    ldd = subprocess.run(["ldd", copysink_bin], capture_output=True, text=True).stdout
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    assert needed
    for soname in needed:
        if re.match(r"lib(asan|ubsan|m|pthread|dl|rt)\.so", soname):
            continue
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(paths[soname])],
                               capture_output=True, text=True)
        if owner.returncode != 0:  # merged /usr: dpkg knows the /lib path
            owner = subprocess.run(["dpkg", "-S", paths[soname]], capture_output=True, text=True)
        package = owner.stdout.split(":", 1)[0]
        assert package in packages, f"{soname} comes from {package}, not in the runtime stage"
