"""The container image and the deployment files, checked without a Docker engine or a cluster:
hadolint on the Dockerfile, `kubernetes-validate --strict` on every manifest, and the invariants an
operator relies on (probes, drain time, non-root, limits, commands the image accepts, settings
that exist)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import build_parser
from app.fakefal.config import FakeFalConfig
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose.yaml"
# Placeholders live in this file; it is kept out of the kustomization so that applying the
# kustomization never overwrites the real Secret.
SECRET_EXAMPLE = "secret.example.yaml"
# The oldest Kubernetes the manifests promise to work on (the API's preStop `sleep` needs 1.30).
OLDEST_KUBERNETES = "1.30.0"

Doc = dict[str, Any]


def tool(name: str) -> Path:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.fail(
            f"{name} is not installed next to {sys.executable}: pip install -e ./sdk -e '.[deploy]'"
        )
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def load_one(path: Path) -> Doc:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert len(docs) == 1, f"{path.name}: one resource per file, found {len(docs)}"
    doc: Doc = docs[0]
    return doc


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], Doc]:
    found: dict[tuple[str, str], Doc] = {}
    for path in manifest_files():
        doc = load_one(path)
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in found, f"{key} defined twice"
        found[key] = doc
    return found


@pytest.fixture(scope="module")
def compose() -> Doc:
    doc: Doc = yaml.safe_load(COMPOSE.read_text())  # resolves the `<<: *falrelay` merges
    return doc


def workloads(manifests: dict[tuple[str, str], Doc]) -> dict[str, Doc]:
    """Pod specs of every workload, by `Kind/name`."""
    return {
        f"{kind}/{name}": doc["spec"]["template"]["spec"]
        for (kind, name), doc in manifests.items()
        if kind in ("Deployment", "Job")
    }


def containers(manifests: dict[tuple[str, str], Doc]) -> Iterator[tuple[str, Doc]]:
    for workload, pod in workloads(manifests).items():
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{workload}/{container['name']}", container


def only_container(doc: Doc) -> Doc:
    found: list[Doc] = doc["spec"]["template"]["spec"]["containers"]
    assert len(found) == 1
    return found[0]


def shutdown_timeout(manifests: dict[tuple[str, str], Doc]) -> float:
    data = manifests["ConfigMap", "falrelay-config"]["data"]
    return float(data["FALRELAY_SHUTDOWN_TIMEOUT_SECONDS"])


def seconds(duration: str | int) -> float:
    """A Compose duration (`30s`, `1m30s`) in seconds."""
    if isinstance(duration, int):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def interpolate(value: str) -> str:
    """What Compose makes of `${VAR:-default}` and `${VAR-default}` when VAR is unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m[1] or "", value)


def environment(service: Doc) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {name: interpolate(str(value)) for name, value in env.items()}


def assert_falrelay_accepts(args: list[str]) -> None:
    """The image's entrypoint is `falrelay`: the arguments must be a command it knows."""
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"`falrelay {shlex.join(args)}` is refused (exit {exc.code})")


# The Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "style", DOCKERFILE)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_dockerfile_builds_in_two_stages_on_one_slim_base() -> None:
    instructions = dockerfile_instructions()
    args = dict(arg.split("=", 1) for op, arg in instructions if op == "ARG" and "=" in arg)
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], arg.split()[0])
        for op, arg in instructions
        if op == "FROM"
    ]
    assert len(bases) == 2, bases
    assert len(set(bases)) == 1, "builder and runtime on the same base: the venv is copied"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", bases[0]), bases[0]
    copies = [arg for op, arg in final_stage() if op == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], "the runtime gets the venv alone"
    runs = " ".join(arg for op, arg in final_stage() if op == "RUN")
    for build_tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert build_tool not in runs, f"{build_tool} in the runtime stage"
    for op, arg in instructions:
        if op == "RUN" and "pip install" in arg:
            assert arg.count("pip install") == arg.count("--no-cache-dir"), arg


def test_dockerfile_runtime_contract(manifests: dict[tuple[str, str], Doc]) -> None:
    stage = final_stage()
    last = {op: arg for op, arg in stage}  # the last of each instruction counts
    assert json.loads(last["ENTRYPOINT"]) == ["falrelay"]
    assert json.loads(last["CMD"]) == ["serve"]
    assert_falrelay_accepts(json.loads(last["CMD"]))
    assert last["EXPOSE"] == "8000"

    user, _, group = last["USER"].partition(":")
    assert user.isdigit(), "a numeric user: runAsNonRoot can check it against the image"
    assert int(user) != 0, "a non-root user"
    for workload, pod in workloads(manifests).items():
        assert pod["securityContext"]["runAsUser"] == int(user), workload
        if group:
            assert pod["securityContext"]["runAsGroup"] == int(group), workload

    healthcheck = last["HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert "urllib.request" in healthcheck, "stdlib only: slim images have no curl or wget"
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck


def test_dockerignore_lets_in_what_the_build_copies_and_nothing_else() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: the build context holds only what is let in"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/").removeprefix("./")
        for op, arg in dockerfile_instructions()
        if op == "COPY" and not arg.startswith("--from")
        for source in arg.split()[:-1]
    }
    assert copied == allowed
    for kept_out in (".venv", ".git", ".falrelay", "tests", ".env"):
        assert kept_out not in allowed


# Kubernetes manifests


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, None], ids=["oldest", "newest"])
def test_manifests_pass_kubernetes_validate(version: str | None) -> None:
    files = manifest_files()
    versions = ["--kubernetes-version", version] if version else []
    result = run(tool("kubernetes-validate"), "--strict", *versions, *files)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # An unknown kind or apiVersion is only a warning: a misspelt kind must fail here too.
    assert not re.search(r"^(WARN|ERROR)", output, re.MULTILINE), output
    for path in files:
        assert f"{path.relative_to(ROOT)} passed" in output, output


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = load_one(K8S / "kustomization.yaml")
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(
        path.name for path in manifest_files() if path.name != SECRET_EXAMPLE
    )
    assert {image["name"] for image in kustomization["images"]} == {"falrelay"}


def test_example_secret_holds_placeholders_only(manifests: dict[tuple[str, str], Doc]) -> None:
    secret = manifests["Secret", "falrelay-secrets"]
    assert "data" not in secret, "stringData: readable placeholders, not base64"
    assert set(secret["stringData"]) == {"FALRELAY_DATABASE_URL", "FALRELAY_FAL_KEY"}
    for name, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, f"{name} must be an obvious placeholder"


def test_api_probes_and_service(manifests: dict[tuple[str, str], Doc]) -> None:
    api = manifests["Deployment", "falrelay-api"]
    container = only_container(api)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000}

    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", 8000), probe

    args = container["args"]
    assert int(args[args.index("--port") + 1]) == 8000, "the server listens where probes look"

    service = manifests["Service", "falrelay-api"]
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    worker_labels = manifests["Deployment", "falrelay-worker"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert not service["spec"]["selector"].items() <= worker_labels.items(), "workers serve no HTTP"
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]


def test_worker_probes_its_loops_on_the_metrics_port(manifests: dict[tuple[str, str], Doc]) -> None:
    worker = manifests["Deployment", "falrelay-worker"]
    container = only_container(worker)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"]: item["value"] for item in container["env"]}
    assert int(env["FALRELAY_METRICS_PORT"]) == ports["probes"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "probes"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    # Restarted only after a loop is stuck three times the stall bound (3 x 60 s), never
    # before its own supervisor had a chance: at least a probe period times the threshold.
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30


def test_roles_run_the_right_falrelay_command(
    manifests: dict[tuple[str, str], Doc],
) -> None:
    expected = {
        ("Deployment", "falrelay-api"): "api",
        ("Deployment", "falrelay-worker"): "worker",
        ("Job", "falrelay-migrate"): "migrate",
    }
    assert {key for key in manifests if key[0] in ("Deployment", "Job")} == set(expected)
    for key, command in expected.items():
        container = only_container(manifests[key])
        assert "command" not in container, "keep the image's `falrelay` entrypoint"
        assert container["args"][0] == command, key
        assert_falrelay_accepts(container["args"])
        assert container["image"] == "falrelay", "one image; the kustomization sets its tag"


def test_migration_job_runs_once_and_gives_up(manifests: dict[tuple[str, str], Doc]) -> None:
    job = manifests["Job", "falrelay-migrate"]
    assert only_container(job)["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert 0 < job["spec"]["backoffLimit"] <= 5
    assert job["spec"]["activeDeadlineSeconds"] > 0


def test_termination_grace_outlasts_the_drain(manifests: dict[tuple[str, str], Doc]) -> None:
    drain = shutdown_timeout(manifests)
    assert drain == Settings.model_fields["shutdown_timeout_seconds"].default
    for name in ("falrelay-api", "falrelay-worker"):
        pod = manifests["Deployment", name]["spec"]["template"]["spec"]
        pre_stop = only_container(manifests["Deployment", name]).get("lifecycle", {})
        pause = pre_stop.get("preStop", {}).get("sleep", {}).get("seconds", 0)
        # SIGTERM comes after the preStop pause, and the grace period counts both.
        assert pod["terminationGracePeriodSeconds"] >= pause + drain + 5, name


def test_pods_run_as_non_root_and_locked_down(manifests: dict[tuple[str, str], Doc]) -> None:
    for workload, pod in workloads(manifests).items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, workload
        assert context["runAsUser"] > 0, workload
        assert context["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert pod["automountServiceAccountToken"] is False, workload
        # Service links would inject FALRELAY_API_* variables next to the real settings.
        assert pod["enableServiceLinks"] is False, workload
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for name, container in containers(manifests):
            if not name.startswith(workload + "/"):
                continue
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in security["capabilities"], name
            assert security.get("privileged", False) is False, name
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: a writable /tmp"


def test_every_container_has_requests_and_limits(
    manifests: dict[tuple[str, str], Doc],
) -> None:
    for name, container in containers(manifests):
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources[kind].keys(), f"{name}: {kind}"


def test_hpa_and_pdb_target_the_api(manifests: dict[tuple[str, str], Doc]) -> None:
    api = manifests["Deployment", "falrelay-api"]
    assert "replicas" not in api["spec"], "the autoscaler owns the API's replica count"
    pod_labels = api["spec"]["template"]["metadata"]["labels"]

    hpa = manifests["HorizontalPodAutoscaler", "falrelay-api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "falrelay-api")
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "cpu" in only_container(api)["resources"]["requests"], "CPU utilisation needs it"

    pdb = manifests["PodDisruptionBudget", "falrelay-api"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert api["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_config_and_secret_references_resolve(manifests: dict[tuple[str, str], Doc]) -> None:
    for name, container in containers(manifests):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in manifests, name
            if "secretRef" in source:
                assert ("Secret", source["secretRef"]["name"]) in manifests, name


def k8s_variables(manifests: dict[tuple[str, str], Doc]) -> set[str]:
    names = set(manifests["ConfigMap", "falrelay-config"]["data"])
    names |= set(manifests["Secret", "falrelay-secrets"]["stringData"])
    for _, container in containers(manifests):
        names |= {variable["name"] for variable in container.get("env", [])}
    return names


def compose_variables(compose: Doc) -> set[str]:
    return {name for service in compose["services"].values() for name in environment(service)}


def test_every_falrelay_variable_is_a_real_setting(
    manifests: dict[tuple[str, str], Doc], compose: Doc
) -> None:
    # Settings ignore unknown variables, so a misspelt one would be silently without effect.
    settings = {f"FALRELAY_{name.upper()}" for name in Settings.model_fields}
    fake = {f"FALRELAY_FAKEFAL_{name.upper()}" for name in FakeFalConfig.model_fields}
    names = k8s_variables(manifests) | compose_variables(compose)
    unknown = {
        name for name in names if name.startswith("FALRELAY_") and name not in settings | fake
    }
    assert not unknown


def test_configmap_values_are_valid_settings(manifests: dict[tuple[str, str], Doc]) -> None:
    data = manifests["ConfigMap", "falrelay-config"]["data"]
    assert all(isinstance(value, str) for value in data.values()), "ConfigMap values are strings"
    Settings(**{name.removeprefix("FALRELAY_").lower(): value for name, value in data.items()})


# Compose


def test_compose_services_and_commands(compose: Doc) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "api", "worker", "fakefal"}
    commands = {name: services[name]["command"] for name in services if name != "postgres"}
    assert commands["migrate"] == ["migrate"]
    assert commands["api"][0] == "api"
    assert commands["worker"] == ["worker"]
    assert commands["fakefal"] == ["fakefal", "--host", "0.0.0.0", "--port", "8001"]
    for name, command in commands.items():
        assert "entrypoint" not in services[name], name
        assert services[name]["image"] == services["api"]["image"], "one image for every role"
        assert_falrelay_accepts(command)
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_start_order(compose: Doc) -> None:
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }, name
    assert "depends_on" not in services["fakefal"], "optional: nothing waits for it"


def test_compose_drain_and_healthchecks(compose: Doc) -> None:
    services = compose["services"]
    for name in ("api", "worker"):
        drain = float(environment(services[name])["FALRELAY_SHUTDOWN_TIMEOUT_SECONDS"])
        assert seconds(services[name]["stop_grace_period"]) > drain, name
    # The image's HEALTHCHECK calls /healthz: roles without HTTP must turn it off.
    for name in ("migrate", "worker"):
        assert services[name]["healthcheck"] == {"disable": True}, name
    assert "healthcheck" not in services["api"], "the image's /healthz check applies"
    fakefal_check = " ".join(services["fakefal"]["healthcheck"]["test"])
    assert "127.0.0.1:8001" in fakefal_check


def test_compose_demo_is_wired_to_the_fake_fal(compose: Doc) -> None:
    services = compose["services"]
    fakefal_port = services["fakefal"]["command"][-1]
    api_command = services["api"]["command"]
    api_port = api_command[api_command.index("--port") + 1]
    for name in ("api", "worker", "migrate"):
        env = environment(services[name])
        assert env["FALRELAY_FAL_QUEUE_URL"] == f"http://fakefal:{fakefal_port}", name
        assert env["FALRELAY_FAL_JWKS_URL"] == (
            f"http://fakefal:{fakefal_port}/.well-known/jwks.json"
        ), name
        assert env["FALRELAY_PUBLIC_BASE_URL"] == f"http://api:{api_port}", name
        assert env["FALRELAY_FAL_KEY"], f"{name}: the fake fal accepts any non-empty key"
        assert env["FALRELAY_DATABASE_URL"].startswith("postgresql+asyncpg://"), name
        assert "@postgres:5432/" in env["FALRELAY_DATABASE_URL"], name
    for name in ("api", "fakefal"):
        for port in services[name]["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name}: published on loopback only"
