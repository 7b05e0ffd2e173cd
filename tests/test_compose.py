"""docker-compose.yml, checked statically: no Docker engine runs where the suite runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.service import TLSConfig

from campaign_engine.settings import Settings
from campaign_engine.temporal import load_connection
from entrypoints.devserver import DYNAMIC_CONFIG
from workflows import search_attributes

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
PREFIX = "CAMPAIGN_ENGINE_"
# `${NAME}`, `${NAME:-default}`, `${NAME:?error}` (and their forms without a colon).
_VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _substitute(value: str, env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, kind, argument = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        assert kind == "-", f"${{{name}}} has no default and no placeholder in .env.example"
        return argument or ""

    return _VARIABLE.sub(replace, value)


CERTS_SOURCE = "./deploy/temporal/certs/"


@pytest.fixture(scope="module")
def made_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `deploy/temporal/make-certs.sh` writes, made in a temporary directory."""
    directory = tmp_path_factory.mktemp("compose") / "certs"
    subprocess.run(
        [str(ROOT / "deploy/temporal/make-certs.sh"), str(directory)],
        check=True,
        capture_output=True,
    )
    return directory


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {name: _substitute(str(value), _env_example()) for name, value in environment.items()}


def _settings_of(service: dict[str, Any]) -> Settings:
    fields = {
        name.removeprefix(PREFIX).lower(): value
        for name, value in _environment(service).items()
        if name.startswith(PREFIX)
    }
    return Settings.model_validate(fields)


def _app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services.items()
        if any(variable.startswith(PREFIX) for variable in _environment(service))
    }


def _published(service: dict[str, Any]) -> set[tuple[int, int]]:
    pairs = set()
    for port in service.get("ports", []):
        host, _, container = str(port).rpartition(":")
        pairs.add((int(host.rpartition(":")[2]), int(container)))
    return pairs


def test_compose_file_parses_with_services(services: dict[str, dict[str, Any]]) -> None:
    assert {
        "postgres",
        "temporal-schema",
        "temporal",
        "temporal-setup",
        "temporal-ui",
        "redis",
        "mailpit",
        "api",
        "worker",
        "worker-deploy",
    } <= set(services)


def _pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and any(c.isdigit() for c in tag)


def test_compose_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "image" in service:
            assert _pinned(service["image"]), f"{name}: {service['image']} is not pinned"
        if "build" in service:
            dockerfile = ROOT / "Dockerfile"
            bases = [
                line.split()[1]
                for line in dockerfile.read_text().splitlines()
                if line.upper().startswith("FROM ")
            ]
            assert bases, "Dockerfile has no FROM"
            for base in bases:
                assert _pinned(base), f"Dockerfile FROM {base} is not pinned"


def test_compose_app_variables_are_settings_and_validate(
    services: dict[str, dict[str, Any]],
) -> None:
    apps = _app_services(services)
    assert set(apps) == {"api", "worker", "worker-deploy"}
    for name, service in apps.items():
        for variable in _environment(service):
            if variable.startswith(PREFIX):
                field = variable.removeprefix(PREFIX).lower()
                assert field in Settings.model_fields, f"{name}: {variable} is no setting"
        settings = _settings_of(service)
        assert settings.temporal_address == "temporal:7233"
        assert settings.database_url is not None
        assert settings.resolved_database_url.startswith("postgresql+asyncpg://")
        assert settings.resolved_rate_limit_storage_uri.startswith("redis://redis:")
        assert settings.api_key_pepper
        assert settings.delivery == "smtp"
        assert settings.smtp_host == "mailpit"
    # One pepper, one database, one task queue for every process.
    api, worker = _settings_of(services["api"]), _settings_of(services["worker"])
    for field in ("api_key_pepper", "database_url", "task_queue", "temporal_namespace"):
        assert getattr(api, field) == getattr(worker, field), field
    # One payload key ring, set (not generated per container, which no other would share).
    assert api.payload_keys is not None and worker.payload_keys is not None
    assert api.payload_keys.get_secret_value() == worker.payload_keys.get_secret_value()
    assert api.payload_encryption and worker.payload_encryption


def test_compose_ports_match_the_settings(services: dict[str, dict[str, Any]]) -> None:
    api = _settings_of(services["api"])
    assert api.api_host == "0.0.0.0"
    assert api.metrics_host == "0.0.0.0"
    assert (api.api_port, api.api_port) in _published(services["api"])
    assert api.api_metrics_port
    assert (api.api_metrics_port, api.api_metrics_port) in _published(services["api"])
    assert f"127.0.0.1:{api.api_port}/" in " ".join(services["api"]["healthcheck"]["test"])
    worker = _settings_of(services["worker"])
    assert worker.worker_metrics_port
    assert str(worker.worker_metrics_port) in [str(p) for p in services["worker"]["expose"]]
    # Temporal's frontend is reached inside the network only.
    assert api.temporal_address == "temporal:7233"
    assert "ports" not in services["temporal"]
    smtp_port = _settings_of(services["worker"]).smtp_port
    assert smtp_port == 1025  # mailpit's SMTP port


def test_compose_setup_registers_exactly_the_search_attributes(
    services: dict[str, dict[str, Any]],
) -> None:
    setup = services["temporal-setup"]
    [script] = [
        ROOT / volume.split(":")[0]
        for volume in setup["volumes"]
        if volume.split(":")[1] in " ".join(setup["command"])
    ]
    registered = dict(re.findall(r"^add (\w+) (\w+)$", script.read_text(), flags=re.MULTILINE))
    expected = {key.name: key.indexed_value_type.name.lower() for key in search_attributes.ALL}
    assert {name: kind.lower() for name, kind in registered.items()} == expected
    assert setup["environment"]["NAMESPACE"] == _settings_of(services["api"]).temporal_namespace


def test_compose_mounted_files_exist(services: dict[str, dict[str, Any]], made_certs: Path) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(CERTS_SOURCE):
                # Made by deploy/temporal/make-certs.sh before the first `up`, never committed.
                made = made_certs / source.removeprefix(CERTS_SOURCE)
                assert made.is_dir(), f"{name}: make-certs.sh makes no {source}"
            elif source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name}: {source} is missing"
    dynamic_config = services["temporal"]["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    mounted = [v.split(":")[1] for v in services["temporal"]["volumes"]]
    assert f"/etc/temporal/{dynamic_config}" in mounted


def test_compose_dependencies_exist_and_have_no_cycle(
    services: dict[str, dict[str, Any]],
) -> None:
    graph: dict[str, set[str]] = {}
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        graph[name] = set(depends_on)
        assert graph[name] <= set(services), f"{name} depends on a missing service"
        if isinstance(depends_on, dict):
            for condition in depends_on.values():
                assert condition["condition"] in {
                    "service_started",
                    "service_healthy",
                    "service_completed_successfully",
                }
                # A `service_healthy` dependency must have a health check to pass.
            for dependency, condition in depends_on.items():
                if condition["condition"] == "service_healthy":
                    assert "healthcheck" in services[dependency], dependency

    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dependency in graph[name]:
            visit(dependency, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
    # The app waits for Temporal's set-up job, which registers the search attributes.
    for app in ("api", "worker"):
        condition = services[app]["depends_on"]["temporal-setup"]["condition"]
        assert condition == "service_completed_successfully"


def test_compose_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_compose_config_is_valid_for_docker_compose() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client here")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker client has no compose plugin here")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **_env_example()},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_compose_ui_decodes_through_the_api_codec(services: dict[str, dict[str, Any]]) -> None:
    ui = _environment(services["temporal-ui"])
    api = _settings_of(services["api"])
    ui_port = next(host for host, _ in _published(services["temporal-ui"]))
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == f"http://localhost:{api.api_port}/codec"
    assert f"http://localhost:{ui_port}" in api.codec_cors_origins
    assert not api.codec_allow_local_ui_without_key


def test_compose_makes_the_workers_build_current(services: dict[str, dict[str, Any]]) -> None:
    worker, deploy = services["worker"], services["worker-deploy"]
    # The same image, so the build id it derives (`worker.versioning.default_build_id`) is the
    # workers' own; no build id is named, in the command or the environment.
    assert deploy["image"] == worker["image"] and deploy["build"] == worker["build"]
    command: list[str] = deploy["command"]
    assert command[:3] == ["deployment", "set-current", "--within"] and len(command) == 4
    assert float(command[3]) >= 60  # a worker must start and poll first
    assert deploy["depends_on"] == {"worker": {"condition": "service_started"}}
    assert deploy["restart"].startswith("on-failure")
    worker_settings, deploy_settings = _settings_of(worker), _settings_of(deploy)
    assert worker_settings.worker_versioning
    assert worker_settings.worker_build_id is None and deploy_settings.worker_build_id is None
    for field in ("worker_deployment_name", "task_queue", "temporal_namespace", "temporal_address"):
        assert getattr(worker_settings, field) == getattr(deploy_settings, field), field
    assert worker_settings.worker_deployment_name == "campaign-engine"


def _compose_dynamic_config() -> dict[str, Any]:
    """The compose Temporal server's dynamic configuration, as its YAML file says."""
    loaded: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy/temporal/dynamicconfig.yaml").read_text()
    )
    return loaded


def test_compose_temporal_has_worker_deployments() -> None:
    dynamic_config = _compose_dynamic_config()
    assert dynamic_config["system.enableDeploymentVersions"] == [{"value": True, "constraints": {}}]


def test_compose_temporal_runs_activities_eagerly_as_the_dev_server_does() -> None:
    """The figures of docs/performance.md are measured with eager activities on the dev server;
    the compose server, whose default is off, runs with the same value."""
    dynamic_config = _compose_dynamic_config()
    assert dict(DYNAMIC_CONFIG)["system.enableActivityEagerExecution"] == "true"
    assert dynamic_config["system.enableActivityEagerExecution"] == [
        {"value": True, "constraints": {}}
    ]


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of every published port, in the short
    (`[ip:]host:container`) or the long syntax; a port given alone is published on all
    interfaces on a random host port (0)."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append(
                (str(port.get("host_ip", "")), int(port.get("published", 0)), int(port["target"]))
            )
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 1:
            found.append(("", 0, int(parts[0])))
        elif len(parts) == 2:
            found.append(("", int(parts[0]), int(parts[1])))
        else:
            found.append((":".join(parts[:-2]).strip("[]"), int(parts[-2]), int(parts[-1])))
    return found


def test_compose_publishes_only_the_api_on_every_interface(
    services: dict[str, dict[str, Any]],
) -> None:
    api = _settings_of(services["api"])
    everywhere = {
        (name, host_port)
        for name, service in services.items()
        for host, host_port, _ in _ports(service)
        if host not in {"127.0.0.1", "::1", "localhost"}
    }
    assert everywhere == {("api", api.api_port)}
    # The UI (write actions, no login) and Mailpit (every message) on this machine only, if at all.
    for name in ("temporal-ui", "mailpit"):
        assert all(host == "127.0.0.1" for host, _, _ in _ports(services[name])), name
    for name in ("temporal", "postgres", "redis", "worker"):
        assert not _ports(services[name]), f"{name} is published"


def test_compose_temporal_requires_client_certificates_from_every_caller(
    services: dict[str, dict[str, Any]], made_certs: Path
) -> None:
    temporal = _environment(services["temporal"])
    assert temporal["TEMPORAL_TLS_REQUIRE_CLIENT_AUTH"] == "true"
    server_mount = _mount(services["temporal"], made_certs)
    for variable in (
        "TEMPORAL_TLS_SERVER_CA_CERT",
        "TEMPORAL_TLS_SERVER_CERT",
        "TEMPORAL_TLS_SERVER_KEY",
        "TEMPORAL_TLS_FRONTEND_CERT",
        "TEMPORAL_TLS_FRONTEND_KEY",
        "TEMPORAL_TLS_CLIENT1_CA_CERT",
    ):
        assert _host_file(temporal[variable], server_mount).is_file(), variable
    assert server_mount[1].name == "server"
    assert temporal["TEMPORAL_TLS_FRONTEND_SERVER_NAME"] == "temporal"

    # Our processes read it as every Temporal tool does (campaign_engine.temporal): the
    # compose file's own variables, with the mounted files, give a client certificate, the CA
    # and the server name `temporal` (in the server certificate's names).
    for name in ("api", "worker", "worker-deploy"):
        environment = _environment(services[name])
        mount = _mount(services[name], made_certs)
        local = {
            variable: str(_host_file(value, mount)) if variable.endswith("_PATH") else value
            for variable, value in environment.items()
            if variable.startswith("TEMPORAL_")
        }
        connection = load_connection(
            _settings_of(services[name]), {**local, "TEMPORAL_CONFIG_FILE": os.devnull}
        )
        assert connection.address == "temporal:7233"
        assert isinstance(connection.tls, TLSConfig), name
        assert connection.tls.client_cert and connection.tls.client_private_key, name
        assert connection.tls.domain == "temporal"
        assert connection.tls.server_root_ca_cert == (made_certs / "ca/ca.pem").read_bytes()
        assert mount[1].name == "client", f"{name} must not see the server's key"

    setup = _environment(services["temporal-setup"])
    assert {k: v for k, v in setup.items() if k.startswith("TEMPORAL_TLS_")} == {
        k: v for k, v in _environment(services["api"]).items() if k.startswith("TEMPORAL_TLS_")
    }
    ui = _environment(services["temporal-ui"])
    ui_mount = _mount(services["temporal-ui"], made_certs)
    for variable in ("TEMPORAL_TLS_CA", "TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY"):
        assert _host_file(ui[variable], ui_mount).is_file(), variable
    assert ui["TEMPORAL_TLS_SERVER_NAME"] == "temporal"


def _mount(service: dict[str, Any], made_certs: Path) -> tuple[str, Path]:
    """The service's one certificate mount: (where in the container, the made directory)."""
    [(target, source)] = [
        (volume.split(":")[1], volume.split(":")[0])
        for volume in service.get("volumes", [])
        if volume.startswith(CERTS_SOURCE)
    ]
    return target, made_certs / source.removeprefix(CERTS_SOURCE)


def _host_file(container_path: str, mount: tuple[str, Path]) -> Path:
    """The made file a container path points at, through the mount."""
    target, source = mount
    assert container_path.startswith(target + "/"), f"{container_path} is outside {target}"
    return source / container_path.removeprefix(target + "/")
