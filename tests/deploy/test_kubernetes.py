"""The Kubernetes manifests (deploy/kubernetes/): rendered here in Python the way
`kubectl kustomize` renders them (tests/deploy/kustomize.py; compared with kubectl where it
is installed), every object validated offline against the Kubernetes schemas
(kubernetes-validate), and the promises of docs/kubernetes.md checked on the rendered
objects: probes, resources and a non-root, read-only user in every container; only the PACS
reaches the DICOM port; the spool volume's access mode; settings that the real settings class
loads; an autoscaler on a metric that /metrics really exports; the worker probe and the
schema wait run for real."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from gateway import migrate
from gateway.cli import main as cli_main
from gateway.database import make_engine
from gateway.settings import ENV_PREFIX, GatewaySettings, load_settings
from gateway.web import create_app
from tests.conftest import REPO, free_port, settings_environment
from tests.deploy.kustomize import render
from tests.pipeline.harness import Process, RedisServer
from tests.web.conftest import web_settings
from tests.web.prometheus_text import parse

KUBERNETES = REPO / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "hospital"
ADAPTER = KUBERNETES / "prometheus-adapter" / "values.yaml"
DOC = REPO / "docs" / "kubernetes.md"
# The oldest Kubernetes release the manifests promise to work on (docs/kubernetes.md).
KUBERNETES_VERSION = "1.30"
FOLDERS = [pytest.param(BASE, id="base"), pytest.param(OVERLAY, id="overlay-hospital")]
WORKLOADS = ("Deployment", "StatefulSet", "Job")
SECRET = "pacs-gateway-secrets"
CONFIG_PATH = "/etc/pacs-gateway/gateway.toml"
IMAGE_HEALTHCHECK = "/opt/app/pacs_gateway_healthcheck.py"  # deploy/images/Containerfile
Obj = dict[str, Any]


def component(obj: Obj) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(obj: Obj) -> Obj:
    return obj["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def workload(objects: list[Obj], name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] in WORKLOADS and component(o) == name]
    return found


def main_container(objects: list[Obj], name: str) -> Obj:
    return pod_spec(workload(objects, name))["containers"][0]  # type: ignore[no-any-return]


def config_toml(objects: list[Obj]) -> str:
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return str(config_map["data"]["gateway.toml"])


def load_rendered_settings(objects: list[Obj], tmp_path: Path) -> GatewaySettings:
    path = tmp_path / "gateway.toml"
    path.write_text(config_toml(objects), encoding="utf-8")
    return load_settings(path)


def unknown_keys(data: Obj, model: BaseModel, where: str = "") -> list[str]:
    """Keys of the TOML that no settings field takes. The nested sections ignore unknown
    keys (pydantic's default), so a misspelt one would load and be silently dropped."""
    unknown = []
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in type(model).model_fields:
            unknown.append(name)
            continue
        field = getattr(model, key)
        if isinstance(value, dict) and isinstance(field, BaseModel):
            unknown += unknown_keys(value, field, name + ".")
        elif isinstance(value, list) and isinstance(field, list):
            for i, (item, sub) in enumerate(zip(value, field, strict=True)):
                if isinstance(item, dict) and isinstance(sub, BaseModel):
                    unknown += unknown_keys(item, sub, f"{name}[{i}].")
    return unknown


def selects(policy: Obj, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def networks(cidrs: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


def inside(host: str, cidrs: list[str]) -> bool:
    network = ipaddress.ip_network(host, strict=False)
    return any(
        network.version == n.version and network.subnet_of(n)  # type: ignore[arg-type]
        for n in networks(cidrs)
    )


@pytest.fixture(autouse=True)
def _no_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings under test come from the rendered files, not from this shell."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture(params=FOLDERS)
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return render(request.param)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("folder", FOLDERS)
def test_python_rendering_equals_kubectl_kustomize(folder: Path) -> None:
    """The renderer the other tests use prints what kubectl prints (names with the
    ConfigMap hash, images, namespace, patches), so what they check is what gets applied."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout

    def key(o: Obj) -> tuple[str, str, str]:
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])

    theirs = {key(o): o for o in yaml.safe_load_all(out) if o}
    ours = {key(o): o for o in render(folder)}
    assert sorted(ours) == sorted(theirs)
    for name, obj in ours.items():
        assert obj == theirs[name], f"{name} differs from kubectl kustomize"


def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: list[Obj]) -> None:
    """Strict: an unknown or misspelt field fails too, not only a wrong type."""
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")
    kinds = sorted({(o["kind"], component(o)) for o in rendered if o["kind"] in WORKLOADS})
    assert kinds == [
        ("Deployment", "triton"),
        ("Deployment", "web"),
        ("Deployment", "worker"),
        ("Job", "migrate"),
        ("StatefulSet", "listener"),
    ]
    assert {"Ingress", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "ConfigMap"} <= {
        o["kind"] for o in rendered
    }


def test_every_container_has_probes_resources_and_runs_as_an_unprivileged_user(
    rendered: list[Obj],
) -> None:
    for obj in (o for o in rendered if o["kind"] in WORKLOADS):
        pod = pod_spec(obj)
        where = f"{obj['kind']} {obj['metadata']['name']}"
        assert pod.get("automountServiceAccountToken") is False, where
        pod_security = pod["securityContext"]
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, where
        containers = [*pod.get("initContainers", []), *pod["containers"]]
        for container in containers:
            at = f"{where} container {container['name']}"
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, at
            assert security.get("runAsUser") == 10001, at
            assert security.get("allowPrivilegeEscalation") is False, at
            assert security.get("readOnlyRootFilesystem") is True, at
            assert security.get("capabilities", {}).get("drop") == ["ALL"], at
            assert not security.get("privileged"), at
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{at} {bound}"
        if obj["kind"] == "Job":
            continue  # runs to its end: nothing to probe
        for container in pod["containers"]:
            at = f"{where} container {container['name']}"
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{at}: no {probe}"
                action = container[probe]
                port = (action.get("httpGet") or action.get("tcpSocket") or {}).get("port")
                if port is not None:
                    assert port in ports, f"{at} {probe}: port {port} is not declared"
                else:
                    assert action["exec"]["command"], at


def test_only_the_pacs_cidr_reaches_the_dicom_port(rendered: list[Obj], tmp_path: Path) -> None:
    """Every policy that selects the listener admits port 11112 from ipBlocks inside the
    PACS CIDR only (the Service's source ranges: the same value); the Service keeps the
    sender's address, without which the listener's own peer check (AE title and address)
    could not work; every allowed peer of the settings lies inside the CIDR."""
    settings = load_rendered_settings(rendered, tmp_path)
    service = one(rendered, "Service", "pacs-gateway-dicom")
    pacs_cidrs = service["spec"]["loadBalancerSourceRanges"]
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert [p["port"] for p in service["spec"]["ports"]] == [settings.dicom.port]
    listener_labels = pod_spec_labels(workload(rendered, "listener"))
    policies = [p for p in rendered if p["kind"] == "NetworkPolicy" and selects(p, listener_labels)]
    assert any(p["spec"]["podSelector"] == {} for p in policies), "no default deny"
    admitted: list[Obj] = []
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and settings.dicom.port not in ports:
                continue
            assert rule.get("from"), f"{policy['metadata']['name']}: DICOM port open to all"
            admitted += rule["from"]
    assert admitted, "nothing may reach the DICOM port"
    for peer in admitted:
        assert set(peer) == {"ipBlock"}, f"expected only ipBlock peers, found {peer}"
        assert inside(peer["ipBlock"]["cidr"], pacs_cidrs), peer
    for allowed in settings.dicom.allowed_peers:
        assert inside(allowed.host, pacs_cidrs), f"allowed peer {allowed.host} is outside"


def pod_spec_labels(obj: Obj) -> dict[str, str]:
    return obj["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def egress_of(rendered: list[Obj], name: str) -> list[Obj]:
    return one(rendered, "NetworkPolicy", name)["spec"]["egress"]  # type: ignore[no-any-return]


def test_web_is_reached_only_from_the_ingress_controller_and_prometheus(
    rendered: list[Obj],
) -> None:
    policy = one(rendered, "NetworkPolicy", "pacs-gateway-web")
    sources = [
        (peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], tuple(ports))
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        for ports in [[p["port"] for p in rule["ports"]]]
        if set(peer) == {"namespaceSelector"}
    ]
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert len(sources) == len(peers), f"expected namespace peers only, found {peers}"
    assert sorted(sources) == [("ingress-nginx", (8080,)), ("monitoring", (8080,))]


def test_workers_reach_only_redis_postgres_triton_and_the_pacs(
    rendered: list[Obj], tmp_path: Path
) -> None:
    settings = load_rendered_settings(rendered, tmp_path)
    policy = one(rendered, "NetworkPolicy", "pacs-gateway-worker")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == []
    destinations: dict[int, list[str]] = {}
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            if "ipBlock" in peer:
                target = peer["ipBlock"]["cidr"]
            else:
                target = peer["podSelector"]["matchLabels"].get(
                    "app.kubernetes.io/component"
                ) or peer["podSelector"]["matchLabels"].get("k8s-app")
            for port in rule["ports"]:
                destinations.setdefault(port["port"], []).append(target)
    pacs = destinations[104]
    assert destinations == {
        53: ["kube-dns", "kube-dns"],
        5432: destinations[5432],
        6379: destinations[6379],
        8000: ["triton"],
        8001: ["triton"],
        104: pacs,
        11112: pacs,
        443: pacs,
    }
    assert len(destinations[5432]) == len(destinations[6379]) == 1
    # Each configured destination is inside the PACS egress on its port.
    for destination in settings.destinations:
        host = getattr(destination, "host", None)
        if host and re.fullmatch(r"[0-9.]+", host):
            port = getattr(destination, "port", 104)
            assert inside(host, destinations.get(port, [])), f"{destination.name} unreachable"
    triton_host, _, triton_port = settings.inference.triton_grpc_url.rpartition(":")
    triton = one(rendered, "Service", triton_host)
    assert int(triton_port) in [p["port"] for p in triton["spec"]["ports"]]


def test_spool_volume_access_mode_is_the_one_the_docs_give(rendered: list[Obj]) -> None:
    """The docs name the access mode; listener, web and workers mount that one claim at
    data_dir (where the spool and results are)."""
    claim = one(rendered, "PersistentVolumeClaim", "pacs-gateway-data")
    match = re.search(r"pacs-gateway-data.{0,80}?access mode: \*\*(\w+)\*\*", DOC.read_text())
    assert match, "docs/kubernetes.md names no access mode for pacs-gateway-data"
    assert claim["spec"]["accessModes"] == [match.group(1)]
    data_dir = tomllib.loads(config_toml(rendered))["data_dir"]
    for name in ("listener", "web", "worker"):
        pod = pod_spec(workload(rendered, name))
        claims = {
            v["name"]
            for v in pod["volumes"]
            if v.get("persistentVolumeClaim", {}).get("claimName") == "pacs-gateway-data"
        }
        mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] in claims]
        assert [m["mountPath"] for m in mounts] == [data_dir], name


def test_config_map_loads_into_the_real_settings_and_matches_the_manifests(
    rendered: list[Obj], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's TOML is valid for gateway.settings; its ports and paths are those of
    the containers; secrets are not in it but come from the Secret as environment variables,
    which win over the file."""
    toml = config_toml(rendered)
    for secret_setting in ("database_url", "broker_url", "secret_key", "password", "token"):
        assert not re.search(rf"^\s*{secret_setting}\s*=", toml, re.M), secret_setting
    env_names: set[str] = set()
    for obj in (o for o in rendered if o["kind"] in WORKLOADS and component(o) != "triton"):
        for container in [*pod_spec(obj).get("initContainers", []), *pod_spec(obj)["containers"]]:
            # The image's entrypoint (tini -- pacs-gateway) runs the subcommand.
            assert "command" not in container, container["name"]
            assert container["args"][1:3] == ["--config", CONFIG_PATH], container["name"]
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
            assert {r["name"] for r in refs.values()} == {SECRET}
            env_names |= set(refs)
    assert env_names == {
        "PACS_GATEWAY_DATABASE_URL",
        "PACS_GATEWAY_QUEUE__BROKER_URL",
        "PACS_GATEWAY_WEB__SECRET_KEY",
    }
    assert not [o for o in rendered if o["kind"] == "Secret"], "secrets must not be rendered"
    monkeypatch.setenv("PACS_GATEWAY_DATABASE_URL", "postgresql+psycopg://gw@db/gateway")
    monkeypatch.setenv("PACS_GATEWAY_QUEUE__BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("PACS_GATEWAY_WEB__SECRET_KEY", "k" * 40)
    settings = load_rendered_settings(rendered, tmp_path)
    assert unknown_keys(tomllib.loads(toml), settings) == []
    assert settings.database_url == "postgresql+psycopg://gw@db/gateway"
    assert settings.queue.broker_url == "redis://redis:6379/0"
    assert settings.queue.worker_concurrency == tomllib.loads(toml)["queue"]["worker_concurrency"]
    listener = main_container(rendered, "listener")
    assert [p["containerPort"] for p in listener["ports"]] == [settings.dicom.port]
    web = main_container(rendered, "web")
    assert [p["containerPort"] for p in web["ports"]] == [settings.http_port]
    assert settings.web.host == "0.0.0.0"  # reachable from the Service, not only loopback
    ingress = one(rendered, "Ingress", "pacs-gateway-web")
    assert ingress["spec"]["tls"][0]["secretName"] == "pacs-gateway-web-tls"
    body = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body.removesuffix("m")) > settings.dicomweb.max_stow_mb


def exported_metric_names(tmp_path: Path) -> set[str]:
    """Scrape /metrics of the real web app on a migrated SQLite database."""
    settings = web_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'gateway.db'}")
    engine = make_engine(settings)
    try:
        migrate.upgrade(settings, engine=engine)
        response = create_app(settings, engine).test_client().get("/metrics")
        assert response.status_code == 200
        return set(parse(response.get_data(as_text=True)))
    finally:
        engine.dispose()


def test_worker_autoscaler_targets_a_metric_that_metrics_exports(tmp_path: Path) -> None:
    """The HPA's External metric is the adapter rule's output name, whose series is one that
    the gateway's /metrics exports: a rename on either side fails here."""
    objects = render(BASE)
    hpa = one(objects, "HorizontalPodAutoscaler", "pacs-gateway-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == workload(objects, "worker")["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    wanted = metric["external"]["metric"]["name"]
    rules = yaml.safe_load(ADAPTER.read_text())["rules"]["external"]
    (rule,) = [r for r in rules if r["name"]["as"] == wanted]
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)  # type: ignore[union-attr]
    assert re.fullmatch(rule["name"]["matches"], series)
    assert series in exported_metric_names(tmp_path)


def test_migration_job_migrates_and_the_pods_only_wait_for_it(tmp_path: Path) -> None:
    """Run for real, on SQLite: the init containers' command waits and fails while the
    schema is behind, migrates nothing itself, and succeeds once the Job's command ran."""
    objects = render(BASE)
    job = one(objects, "Job", "pacs-gateway-migrate")
    job_args = pod_spec(job)["containers"][0]["args"]
    assert job_args[0] == "migrate" and "--wait" not in job_args
    waits = []
    for name in ("listener", "web", "worker"):
        (init,) = pod_spec(workload(objects, name))["initContainers"]
        assert init["args"][0] == "migrate" and "--wait" in init["args"], name
        waits.append(init["args"])
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")

    def run(args: list[str]) -> int:
        argv = [a.replace(CONFIG_PATH, str(config)) for a in args]
        wait_at = argv.index("--wait") + 1 if "--wait" in argv else None
        if wait_at is not None:
            argv[wait_at] = "1"  # not the manifests' 600 s
        return cli_main(argv)

    assert run(waits[0]) == 2
    assert run(waits[0]) == 2, "the wait must not have migrated"
    assert run(job_args) == 0
    for args in waits:
        assert run(args) == 0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir, free_port())
    server.start()
    yield server
    server.stop()


def test_worker_probe_answers_only_while_this_hosts_worker_runs(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The worker's exec probe (the image's health check), run against a real worker on a
    real broker: 0 while the worker runs on this host, 1 once it stopped."""
    worker_container = main_container(render(BASE), "worker")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = worker_container[probe]["exec"]["command"]
        assert command == ["python3", IMAGE_HEALTHCHECK, "worker"], probe
    settings = web_settings(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'gateway.db'}",
        queue={"broker_url": redis_server.url},
    )
    # The image copies deploy/images/healthcheck.py there; with no config file at
    # /etc/pacs-gateway here, it takes the settings from the environment.
    command = [sys.executable, str(REPO / "deploy" / "images" / "healthcheck.py"), "worker"]
    env = settings_environment(settings)

    def probe_exit() -> int:
        return subprocess.run(command, env=env, capture_output=True, timeout=60).returncode

    assert probe_exit() == 1, "no worker runs yet"
    worker = Process("worker", settings, tmp_path / "worker.log").start()
    try:
        deadline = 60
        for _ in range(deadline // 2):
            if probe_exit() == 0:
                break
        else:
            pytest.fail(f"worker never answered the probe:\n{worker.log_tail()}")
    finally:
        worker.stop()
    assert probe_exit() == 1, "a stopped worker must fail the probe"


def test_triton_runs_on_gpu_nodes_with_each_models_gpu_config() -> None:
    objects = render(BASE)
    triton = workload(objects, "triton")
    pod = pod_spec(triton)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--model-config-name=gpu" in container["args"]
    models = [p.parent for p in (REPO / "triton_models").glob("*/config.pbtxt")]
    assert models
    for model in models:
        assert (model / "configs" / "gpu.pbtxt").is_file(), f"{model.name}: no GPU config"
