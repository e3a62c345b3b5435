"""The Docker deployment files (Dockerfile, compose.yaml, deploy/nginx.conf) agree with the code, without Docker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bot.cli import build_parser
from flows.store.startup import url_problem

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
NGINX = (ROOT / "deploy" / "nginx.conf").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
BOTS = ("bot1", "bot2")
PORT = "8080"
_INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:[:?\-+][^}]*)?\}")


def instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction in the Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.upper().startswith(f"{name} ")]


def substituted(value: str) -> str:
    """`value` with each ${VAR...} replaced by a plausible value, as compose would once .env is filled in."""
    return _INTERPOLATION.sub(lambda match: "https://bot.example.com/tg/hook" if "URL" in match.group(1) else "pw",
                              value)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with the test extra's OpenAPI tools
    compose = yaml.safe_load(COMPOSE_TEXT)
    assert isinstance(compose, dict)
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def test_the_image_runs_as_a_fixed_non_root_user() -> None:
    users = instructions("USER")
    assert users, "the Dockerfile sets no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"the runtime user is {users[-1]!r}, not a fixed non-root uid"


def test_the_image_installs_the_postgres_extra_and_no_test_tools() -> None:
    installs = [run for run in instructions("RUN") if "pip " in run]
    extras = {extra.strip() for run in installs for group in re.findall(r"\[([^\]]*)\]", run)
              for extra in group.split(",")}
    assert "postgres" in extras
    assert not extras & {"test", "bench"}, f"the image installs {extras}"
    assert instructions("FROM")[-1].startswith("python:3.11-slim")


def test_the_image_is_the_command() -> None:
    assert instructions("ENTRYPOINT") == ['["recovery-bot"]']


def test_the_image_health_check_asks_the_route_the_webhook_server_serves() -> None:
    (check,) = instructions("HEALTHCHECK")
    assert f"http://127.0.0.1:{PORT}/healthz" in check
    assert 'add_get("/healthz"' in (ROOT / "bot" / "frontends" / "webhook.py").read_text()


def test_the_build_context_leaves_out_secrets_databases_and_environments() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".git", "**/*.db"} <= ignored


def test_compose_has_postgres_a_migration_two_bots_and_a_proxy(services: dict[str, Any]) -> None:
    assert {"postgres", "migrate", *BOTS, "proxy"} <= set(services)
    running = [name for name, service in services.items() if service.get("command", [None])[0] == "run"]
    assert sorted(running) == list(BOTS)
    assert services["postgres"]["image"] == "postgres:15"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_the_migration_runs_once_postgres_is_healthy(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert build_parser().parse_args(migrate["command"]).db_command == "upgrade"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("bot", BOTS)
def test_each_bot_serves_the_webhook_on_postgres_after_the_migration(services: dict[str, Any], bot: str) -> None:
    service = services[bot]
    args = build_parser().parse_args([substituted(part) for part in service["command"]])
    assert args.command == "run" and args.webhook_url and str(args.port) == PORT
    url = substituted(service["environment"]["DATABASE_URL"])
    assert url.startswith("postgresql+asyncpg://") and url_problem(url) is None
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert service["env_file"] == ".env"


@pytest.mark.parametrize("bot", BOTS)
def test_each_bot_has_a_health_check_on_its_port(services: dict[str, Any], bot: str) -> None:
    check = " ".join(services[bot]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{PORT}/healthz" in check


def test_the_proxy_uses_the_nginx_config_and_waits_for_both_bots(services: dict[str, Any]) -> None:
    proxy = services["proxy"]
    assert proxy["image"] == "nginx:stable"
    assert any(volume.startswith("./deploy/nginx.conf:/etc/nginx/nginx.conf") for volume in proxy["volumes"])
    assert {bot: proxy["depends_on"][bot]["condition"] for bot in BOTS} == dict.fromkeys(BOTS, "service_healthy")


def test_every_variable_compose_reads_is_in_env_example() -> None:
    names = set(_INTERPOLATION.findall(COMPOSE_TEXT))
    assert names, "compose.yaml reads no variables: the test pattern is wrong"
    missing = sorted(name for name in names if f"\n{name}=" not in ENV_EXAMPLE)
    assert not missing, f"{missing} are read by compose.yaml but not in .env.example"


def test_nginx_balances_over_both_bots() -> None:
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", NGINX, re.DOTALL)
    assert upstream is not None, "deploy/nginx.conf has no upstream block"
    name, body = upstream.groups()
    servers = re.findall(r"^\s*server\s+(\S+)", body, re.MULTILINE)
    assert servers == [f"{bot}:{PORT}" for bot in BOTS]
    assert f"proxy_pass http://{name};" in NGINX
