"""docker-compose.yml cannot run here (no Docker engine), so it is checked statically:
every reference resolves, every variable maps to a real setting, every command is a
real CLI command."""

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.cli import main as cli_main
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _app_services(compose: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in compose["services"].items() if s.get("build") == "."}


def test_the_production_shape_is_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "postgres",
        "init",
        "api",
        "generation",
        "moderation",
        "materializer",
        "ranking",
    ):
        assert name in services, f"service {name} missing"
    assert all("KAFKA_PROCESS_ROLES" in services[f"kafka-{i}"]["environment"] for i in (1, 2, 3)), "KRaft mode"
    gpu = services["generation"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    for name, service in services.items():
        if name != "init":
            assert "healthcheck" in service, f"{name} has no health check"


def test_dependencies_and_volumes_exist(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], compose.get("volumes", {})
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for mount in service.get("volumes", []):
            source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", mount).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"


def _setting_exists(var: str) -> bool:
    model: Any = Settings
    for part in var.lower().split("__"):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_every_app_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    for name, service in _app_services(compose).items():
        for var in service["environment"]:
            assert _setting_exists(var), f"{name}: {var} does not match any field of core.settings.Settings"


def test_the_app_environment_builds_valid_production_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _app_services(compose)["api"]["environment"]
    for var, value in env.items():
        value = re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "a-real-secret-from-the-operator", str(value))
        value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
        monkeypatch.setenv(var, value)
    settings = Settings()
    assert settings.environment == "production"
    assert settings.kafka.replication_factor == 3 and not settings.kafka.embedded
    assert settings.database_url.startswith("postgresql://")


def test_production_refuses_the_placeholder_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValueError, match="SECRET_KEY"):
        Settings()


def test_interpolated_variables_are_required_or_defaulted() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for match in re.finditer(r"\$\{([^}]+)\}", text):
        expr = match.group(1)
        assert ":-" in expr or ":?" in expr, f"${{{expr}}} has neither a default nor a clear error"


def test_commands_are_real_cli_commands(compose: dict[str, Any]) -> None:
    commands: list[list[str]] = []
    for service in _app_services(compose).values():
        if "command" in service:
            commands.append(service["command"])
        entry = service.get("entrypoint")
        if entry and entry[:2] == ["sh", "-c"]:
            commands += [shlex.split(part)[1:] for part in entry[2].split("&&")]
        health = service.get("healthcheck", {}).get("test", [])
        if health[:2] == ["CMD", "clipstream"]:
            commands.append(health[2:])
    assert commands
    for argv in commands:
        with pytest.raises(SystemExit) as exc:
            cli_main([*argv[:1], "--help"] if argv[0] != "worker" else ["worker", "--help"])
        assert exc.value.code == 0, f"clipstream {argv} is not a CLI command"
        if argv[0] == "worker":
            from streams.roles import ROLES

            assert argv[1] in ROLES
