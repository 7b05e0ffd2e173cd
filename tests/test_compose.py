"""docker-compose.yml, checked statically: no Docker engine runs where the suite runs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from campaign_engine.settings import Settings
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
    temporal_port = int(api.temporal_address.rpartition(":")[2])
    assert (temporal_port, temporal_port) in _published(services["temporal"])
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


def test_compose_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
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


def test_compose_temporal_has_worker_deployments() -> None:
    dynamic_config = yaml.safe_load((ROOT / "deploy/temporal/dynamicconfig.yaml").read_text())
    assert dynamic_config["system.enableDeploymentVersions"] == [{"value": True, "constraints": {}}]
