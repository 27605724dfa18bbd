"""The Helm chart: lint, a matrix of renderings decoded strictly against the Kubernetes API types, what the
rendered objects must agree on, and `podman kube play` of the rendered Deployment serving a journey."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import Emulator, free_port
from podman import AWS_ENV, IMAGE, ROOT, VERSION, journey, podman, require_image, wait_serving

CHART = ROOT / "deploy" / "helm" / "otp-step-service"
BIN = ROOT / ".bin"
KUBE_VERSION = "1.31.0"
MONITORING_API = "monitoring.coreos.com/v1"

# name -> (--set values, --api-versions): the renderings every assertion below holds for.
MATRIX: dict[str, tuple[dict[str, str], list[str]]] = {
    "defaults": ({}, []),
    "tls-mtls": ({"tls.enabled": "true", "tls.secretName": "otp-tls", "tls.clientCA": "true"}, []),
    "sentinel-store": (
        {
            "store.url": "redis+sentinel://sentinel-0.redis:26379,sentinel-1.redis:26379/otp-master",
            "store.passwordSecret": "redis-password",
            "store.keysSecret": "otp-sealing-keys",
        },
        [],
    ),
    "cluster-store-tls": (
        {
            "store.url": "rediss+cluster://clustercfg.otp.example.cache.amazonaws.com:6379",
            "store.passwordSecret": "redis-password",
            "store.keysSecret": "otp-sealing-keys",
            "store.caSecret": "redis-ca",
            "tls.enabled": "true",
            "tls.secretName": "otp-tls",
            "tls.clientCA": "true",
        },
        [],
    ),
    "monitoring-on": ({}, [MONITORING_API]),
    "monitoring-off": (
        {"monitoring.enabled": "false", "monitoring.dashboard.enabled": "false"},
        [MONITORING_API],
    ),
    "hpa-on": ({"autoscaling.enabled": "true"}, []),
    "hpa-off-no-policy": ({"autoscaling.enabled": "false", "networkPolicy.enabled": "false"}, []),
}


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing: `make chart-tools` builds it into .bin/")
    return str(path)


def _nested(values: dict[str, str]) -> dict[str, Any]:
    """Dotted keys as a values tree; 'true'/'false' and digits typed as YAML would type them."""
    tree: dict[str, Any] = {}
    for key, text in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(text) if re.fullmatch(r"true|false|\d+", text) else text
    return tree


def render(values: dict[str, str], api_versions: list[str] = (), *extra: str) -> str:  # type: ignore[assignment]
    """`helm template` of the chart with these values (given as a values file: URLs hold commas)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as given:
        yaml.safe_dump(_nested(values), given)
        given.flush()
        command = [
            _tool("helm"),
            "template",
            "otp",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "-f",
            given.name,
        ]
        for api in api_versions:
            command += ["--api-versions", api]
        result = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(manifest: str) -> dict[str, dict[str, Any]]:
    """The rendered objects by 'Kind/name'."""
    found = {}
    for document in yaml.safe_load_all(manifest):
        if document:
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def strictly_decoded(manifest: str) -> list[str]:
    """manifest-check's verdict: the objects it decoded, or an assertion with its complaint."""
    result = subprocess.run(
        [_tool("manifest-check")], input=manifest, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_helm_lint_strict_passes() -> None:
    result = subprocess.run(
        [_tool("helm"), "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_charts_app_version_is_the_services_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION


def test_the_strict_decoder_refuses_a_misspelt_field() -> None:
    manifest = render({})
    misspelt = manifest.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:", 1)
    assert misspelt != manifest
    result = subprocess.run(
        [_tool("manifest-check")], input=misspelt, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "readOnlyRootFileSystem" in result.stderr, result.stderr


@pytest.mark.parametrize("case", list(MATRIX))
def test_every_rendering_decodes_strictly_and_holds_together(case: str) -> None:
    values, apis = MATRIX[case]
    manifest = render(values, apis)
    rendered = objects(manifest)
    assert sorted(strictly_decoded(manifest)) == sorted(rendered)
    deployment = rendered["Deployment/otp-otp-step-service"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}

    # Probes: native gRPC, on the plaintext health-only port, whatever the TLS setting.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["health"], probe
    assert env["OTP_STEP_HEALTH_LISTEN"].endswith(f":{ports['health']}")
    assert env["OTP_STEP_LISTEN"].endswith(f":{ports['grpc']}")
    assert env["OTP_STEP_METRICS_LISTEN"].endswith(f":{ports['metrics']}")
    tls = values.get("tls.enabled") == "true"
    assert ("OTP_STEP_TLS_CERT" in env) is tls and ("OTP_STEP_ALLOW_INSECURE" in env) is not tls
    assert ("OTP_STEP_TLS_CLIENT_CA" in env) is (values.get("tls.clientCA") == "true")

    # The drain fits in the grace period.
    drain = float(env["OTP_STEP_DRAIN_NOTICE_SECONDS"]) + float(env["OTP_STEP_GRACE_SECONDS"])
    assert pod["spec"]["terminationGracePeriodSeconds"] >= drain

    # Hardened pod and container.
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"] and security["runAsNonRoot"]
    assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["spec"]["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/tmp" in mounts and not [m for m in mounts.values() if "subPath" in m]

    # Secrets are files: every *_FILE setting and TLS path lies in a mounted volume.
    for name, value in env.items():
        if name.endswith(("_FILE", "_CERT", "_KEY", "_CA")) and value:
            assert any(value.startswith(path + "/") for path in mounts), (name, value)
    if "store.url" in values:
        assert env["OTP_STEP_CHALLENGE_STORE"] == values["store.url"]
        assert env["OTP_STEP_CHALLENGE_STORE_PASSWORD_FILE"] == "/etc/otp-step/store-password/password"

    # Services, the PDB and the NetworkPolicy select the pods, and name ports the container has.
    for kind in ("Service/otp-otp-step-service", "Service/otp-otp-step-service-headless"):
        service = rendered[kind]
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert rendered["Service/otp-otp-step-service-headless"]["spec"]["clusterIP"] == "None"
    assert (
        rendered["PodDisruptionBudget/otp-otp-step-service"]["spec"]["selector"]["matchLabels"].items()
        <= labels.items()
    )
    policy = rendered.get("NetworkPolicy/otp-otp-step-service")
    if values.get("networkPolicy.enabled") == "false":
        assert policy is None
    else:
        assert policy is not None
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ingress_ports == set(ports), (ingress_ports, ports)
        metrics_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "metrics")
        assert metrics_rule["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert {53, 443} <= egress_ports

    # Replicas: two by default, or the HPA's.
    hpa = rendered.get("HorizontalPodAutoscaler/otp-otp-step-service")
    if values.get("autoscaling.enabled") == "true":
        assert hpa is not None and "replicas" not in deployment["spec"]
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    else:
        assert hpa is None and deployment["spec"]["replicas"] == 2

    # Monitoring objects only where the Prometheus Operator's API exists and they are not turned off.
    monitoring = MONITORING_API in apis and values.get("monitoring.enabled") != "false"
    assert ("ServiceMonitor/otp-otp-step-service" in rendered) is monitoring
    assert ("PrometheusRule/otp-otp-step-service" in rendered) is monitoring


def test_the_rules_and_dashboard_are_the_repositorys_own_files() -> None:
    rendered = objects(render({}, [MONITORING_API]))
    rules = yaml.safe_load((ROOT / "deploy/prometheus/otp-step-service.rules.yml").read_text())
    assert rendered["PrometheusRule/otp-otp-step-service"]["spec"]["groups"] == rules["groups"]
    dashboard = rendered["ConfigMap/otp-otp-step-service-dashboard"]
    assert dashboard["data"]["otp-step-service.json"] == (ROOT / "deploy/grafana/dashboard.json").read_text()
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_a_packaged_chart_carries_the_rules_content_not_a_link(tmp_path: Path) -> None:
    result = subprocess.run(
        [_tool("helm"), "package", str(CHART), "--destination", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("*.tgz")
    rendered = objects(
        subprocess.run(
            [_tool("helm"), "template", "otp", str(archive), "--kube-version", KUBE_VERSION, "--api-versions", MONITORING_API],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert rendered["PrometheusRule/otp-otp-step-service"]["spec"]["groups"]


def test_podman_kube_play_of_the_rendered_deployment_serves_a_journey(
    emulator: Emulator, mounted: Path
) -> None:
    require_image()
    grpc, health, metrics = free_port(), free_port(), free_port()
    # The demo connection alone (the file's first table): the pod warms every connection before it serves.
    tables = (mounted / "connections.toml").read_text().split("\n\n")
    connections = next(t for t in tables if t.startswith('[connections."demo"]'))
    connections = connections.replace(str(mounted), "/etc/otp-step/secrets") + "\n"
    secrets = {p.name: p.read_text() for p in mounted.glob("*.secret")}
    values = {
        "image.repository": IMAGE.rsplit(":", 1)[0],
        "replicaCount": "1",
        "listenHost": "127.0.0.1",  # loopback on the host's network: plaintext is allowed there
        "ports.grpc": str(grpc),
        "ports.health": str(health),
        "ports.metrics": str(metrics),
    }
    with tempfile.TemporaryDirectory() as folder:
        values_file = Path(folder) / "values.yaml"
        env = {**AWS_ENV, "OTP_STEP_SELF_TEST": "off"}
        values_file.write_text(
            yaml.safe_dump({"connections": connections, "secrets": {"files": secrets}, "env": env})
        )
        rendered = objects(render(values, [], "-f", str(values_file)))
        wanted = [
            d
            for key, d in rendered.items()
            if key.split("/")[0] in {"Deployment", "ConfigMap", "Secret"} and "dashboard" not in key
        ]
        # Podman turns declared containerPorts into port mappings, which host networking refuses; on
        # Kubernetes they are declarations only (the probes and policies above name them), so they go.
        # Podman 4.3 (Debian 12's) panics on a Secret volume (a nil pointer in kube.VolumeFromSecret), so
        # the rendered Secret's files are given as a hostPath of the same files; the Secret itself is
        # checked above by the strict decoder, and the ConfigMap volume is played as rendered.
        for document in wanted:
            if document["kind"] == "Deployment":
                pod = document["spec"]["template"]["spec"]
                pod["containers"][0].pop("ports")
                # Podman runs exec, HTTP and TCP probes but not gRPC ones: it would restart the container
                # on a probe it cannot run. The service's health is polled below instead.
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    pod["containers"][0].pop(probe)
                for volume in pod["volumes"]:
                    if volume["name"] == "secrets":
                        assert volume.pop("secret")["secretName"] == "otp-otp-step-service-secrets"
                        volume["hostPath"] = {"path": str(mounted), "type": "Directory"}
        wanted = [d for d in wanted if d["kind"] != "Secret"]
        play = Path(folder) / "play.yaml"
        play.write_text(yaml.safe_dump_all(wanted))
        played = podman("kube", "play", "--network", "host", str(play), check=False, timeout=180)
        try:
            assert played.returncode == 0, played.stdout + played.stderr
            try:
                wait_serving(f"127.0.0.1:{health}", timeout=30)
                journey(f"127.0.0.1:{grpc}", emulator)
            except AssertionError as exc:
                names = podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
                logs = [podman("logs", n, check=False).stderr for n in names if "otp-step-service" in n]
                states = podman("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
                raise AssertionError(f"{exc}; containers: {states}; the pod's logs: {logs}") from None
        finally:
            podman("kube", "down", str(play), check=False, timeout=120)
