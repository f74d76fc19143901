"""The shipped image, run as Kubernetes runs it: the image that scripts/image.sh built from
docker/Dockerfile (COPYSINK_TEST_IMAGE; scripts/test.sh builds it before this file runs), with
the ConfigMap's copysink.ini mounted read-only at /etc/copysink, a read-only root file system,
user 10001, the per-pod overrides from the environment. The container migrates the suite's
PostgreSQL, loads entries from the suite's broker into the three tables (contents compared),
answers /healthz and /readyz, and on SIGTERM (podman stop with the Deployment's
terminationGracePeriodSeconds) drains and exits 0 within that period."""
import os
import random
import subprocess
import time
import urllib.request

import pytest
import yaml

from conftest import free_port, wait_for
from entries import assert_table_equals, encode, expected_rows, kafka_key, make_entry
from test_e2e import all_end_offsets, partition_of, produce, stored_offsets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_SH = os.path.join(ROOT, "scripts", "image.sh")
K8S = os.path.join(ROOT, "docker", "k8s")
COUNTS = {"memory_entries": 2500, "patterns": 1500, "trajectories": 1000}
MODES = {"memory_entries": "update", "patterns": "update", "trajectories": "skip"}


def manifest(name):
    with open(os.path.join(K8S, name)) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def image():
    """The image under test: the one scripts/image.sh names, built (a missing image fails)."""
    name = subprocess.run([IMAGE_SH, "name"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert os.environ.get("COPYSINK_TEST_IMAGE") == name, (
        "COPYSINK_TEST_IMAGE must name the image scripts/image.sh builds "
        f"({name}); scripts/test.sh builds it and sets the variable")
    assert subprocess.run(["podman", "image", "exists", name]).returncode == 0, \
        f"image {name} not built (scripts/image.sh build)"
    return name


def test_manifests_and_compose_name_the_built_image(image):
    """The Deployment, the migration Job and the compose file run the image built here, and
    compose builds it from docker/Dockerfile."""
    short = image.removeprefix("localhost/")
    for name in ("deployment.yaml", "job-migrate.yaml"):
        spec = manifest(name)["spec"]["template"]["spec"]
        assert [c["image"] for c in spec["containers"]] == [short], name
    with open(os.path.join(ROOT, "docker", "compose.yaml")) as f:
        compose = yaml.safe_load(f)
    for svc in ("migrate", "copysink"):
        s = compose["services"][svc]
        assert s["image"] == short, svc
        assert s["build"]["dockerfile"] == "docker/Dockerfile", svc


def http_status(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def podman_run(image, args, env, config_dir, *extra):
    """scripts/image.sh run (podman with the host's network) as the Deployment runs the pod."""
    cmd = [IMAGE_SH, "run", "--read-only", "--user", "10001:10001",
           "-v", f"{config_dir}:/etc/copysink:ro", *extra]
    for k, v in env.items():
        cmd += ["-e", f"{k}={v}"]
    return cmd + [image, *args]


def test_container_migrates_loads_and_stops_on_sigterm(tmp_path, image, database, kafka):
    deployment = manifest("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsUser"] == 10001
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "copysink.ini").write_text(manifest("configmap.yaml")["data"]["copysink.ini"])
    os.chmod(tmp_path, 0o755)
    os.chmod(config_dir, 0o755)
    os.chmod(config_dir / "copysink.ini", 0o644)

    topics = {t: kafka.topic(t.replace("_", ".")) for t in COUNTS}
    kafka.create_topics({**{t: 3 for t in topics.values()},
                         **{t + ".dlq": 1 for t in topics.values()}})
    group = "copysink-" + kafka.prefix
    port = free_port()
    # what a pod would override from its environment: the addresses of this suite's servers
    env = {"COPYSINK_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
           "COPYSINK_KAFKA_GROUP_ID": group,
           "COPYSINK_POSTGRES_CONNINFO": database,
           "COPYSINK_HTTP_LISTEN": f"127.0.0.1:{port}",
           **{f"COPYSINK_TABLE_{t.upper()}_TOPIC": topic for t, topic in topics.items()}}

    job = manifest("job-migrate.yaml")["spec"]["template"]["spec"]["containers"][0]
    migrate = subprocess.run(podman_run(image, job["args"], env, config_dir, "--rm"),
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    rng = random.Random(20261203)
    messages, applied = [], []
    for table, count in COUNTS.items():
        for i in range(count):
            e = make_entry(rng, table, i % (count * 4 // 5))  # some keys twice
            key = kafka_key(table, e)
            messages.append({"topic": topics[table], "key": key,
                             "value": encode(e, rng.random() < 0.5),
                             "partition": partition_of(key)})
            applied.append((table, e))
    produce(kafka, messages)
    # a key's entries share a partition, so production order is their order
    expected = expected_rows(applied, MODES)
    ends = all_end_offsets(kafka, topics)

    name = "copysink-test-" + kafka.prefix
    # the Deployment's arguments, as the pod runs them
    run = subprocess.run(podman_run(image, container["args"], env, config_dir, "-d", "--name",
                                    name), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    try:
        def logs():
            out = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
            return out.stdout + out.stderr

        def running():
            out = subprocess.run(["podman", "inspect", "--format", "{{.State.Running}}", name],
                                 capture_output=True, text=True)
            return out.stdout.strip() == "true"

        wait_for(lambda: http_status(port, "/healthz") == 200 or not running(), 60,
                 "/healthz to answer 200")
        assert running(), logs()
        wait_for(lambda: stored_offsets(database, group) == ends or not running(), 180,
                 "stored offsets to reach the end offsets")
        assert running(), logs()
        wait_for(lambda: http_status(port, "/readyz") == 200, 30, "/readyz to answer 200")
        for table in COUNTS:
            assert_table_equals(database, table, expected[table])

        start = time.monotonic()
        stop = subprocess.run(["podman", "stop", "-t", str(grace), name], capture_output=True,
                              text=True, timeout=grace + 30)
        took = time.monotonic() - start
        assert stop.returncode == 0, stop.stdout + stop.stderr
        code = subprocess.run(["podman", "inspect", "--format", "{{.State.ExitCode}}", name],
                              capture_output=True, text=True, check=True).stdout.strip()
        text = logs()
        assert code == "0", f"exit code {code}:\n{text[-4000:]}"
        assert took < grace, f"stopping took {took:.1f}s, the grace period is {grace}s"
        assert "copysink stopped" in text, text[-4000:]
        print(f"image {image}: stopped in {took:.2f}s (grace {grace}s)")
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)
