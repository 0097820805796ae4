"""The deployment files are valid and agree with the code, checked offline.

Covers docker-compose.yml, .env.example, the Dockerfile, .dockerignore, deploy/nginx.conf and
the Kustomize base and example overlay under deploy/. Schemas: the compose spec bundled in
check-jsonschema, the Kubernetes schemas bundled in kubernetes-validate, and the custom-resource
schemas vendored in deploy/schemas/. Kustomize renders through `kubectl kustomize`.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]  # no stubs installed
import pytest
import yaml

from gateway.cli import build_parser
from gateway.settings import (
    ConfigError,
    HttpSettings,
    Settings,
    WorkerSettings,
    load_settings,
)

Doc = dict[str, Any]

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
NGINX_CONF = DEPLOY / "nginx.conf"
SCHEMAS = DEPLOY / "schemas"
KUSTOMIZATIONS = {"base": DEPLOY / "base", "example": DEPLOY / "overlays" / "example"}

# Kubernetes versions to validate against; both are bundled in kubernetes-validate.
K8S_VERSIONS = ("1.29.0", "1.33.0")
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentication_v1alpha1.json",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq.com_rabbitmqcluster_v1beta1.json",
}
# deploy/monitoring: Prometheus Operator resources (a separate kustomization: it needs their CRDs).
MONITORING = DEPLOY / "monitoring"
MONITORING_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrule_v1.json",
}
BUILTIN_WORKERS = ("roaming", "reachability", "sms")
CONTRACT_ENV_VARS = frozenset(
    {
        "GATEWAY_CONFIG",
        "GATEWAY_AMQP_URL",
        "GATEWAY_STATE_URL",
        "GATEWAY_HTTP_HOST",
        "GATEWAY_HTTP_PORT",
        "GATEWAY_LOG_FORMAT",
        "GATEWAY_TOKENS_CAMARA",
        "GATEWAY_TOKENS_NOTIFY_STATUS",
        "GATEWAY_TOKENS_NOTIFY_INBOUND",
    }
)
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
APP_IMAGE = "event-gateway"
INGRESS_PACKAGE = "gateway"
WORKER_PACKAGE = "consumers"
APP_SERVICES = ("topology", "ingress", *BUILTIN_WORKERS)
SCALED_SERVICES = ("ingress", *BUILTIN_WORKERS)
DUMMY_DIGEST = "sha256:" + "ab" * 32
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
GATEWAY_VAR = re.compile(r"\bGATEWAY_[A-Z0-9_]+\b")


# --- shared helpers ------------------------------------------------------------------------


@cache
def code_env_vars() -> frozenset[str]:
    """Every GATEWAY_* name the code mentions: the only ones deployment files may set."""
    names: set[str] = set()
    for package in ("gateway", "consumers"):
        for path in (ROOT / package).rglob("*.py"):
            names.update(GATEWAY_VAR.findall(path.read_text(encoding="utf-8")))
    return frozenset(names) or CONTRACT_ENV_VARS


@cache
def served_paths(package: str) -> frozenset[str]:
    """GET paths a package's HTTP apps register, among the contract's operations paths."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        found.update(re.findall(r'add_get\(\s*"(/[^"]+)"', path.read_text(encoding="utf-8")))
    return frozenset(found & PROBE_PATHS) or PROBE_PATHS


@cache
def cli_parser() -> argparse.ArgumentParser:
    """The real `event-gateway` argument parser."""
    return build_parser()


def option_value(args: list[str], option: str) -> str | None:
    """The value of `--option V` or `--option=V` in an argument list."""
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def assert_cli_accepts(args: list[str], where: str) -> None:
    """`event-gateway ARGS` parses with the real CLI (subcommand, worker, options)."""
    assert args, f"{where}: no command"
    if args[0] == "consume" and "--queue" not in args:
        assert args[1] in BUILTIN_WORKERS, f"{where}: unknown worker {args[1]!r}"
    try:
        cli_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{where}: the CLI rejects `event-gateway {' '.join(args)}` (exit {exc.code})")


def settings_for(env: Mapping[str, str], where: str) -> Settings:
    """Load settings exactly as the process would, from this environment only."""
    try:
        return load_settings(None, env)
    except ConfigError as exc:
        pytest.fail(f"{where}: the gateway would refuse this configuration: {exc}")


def with_dummy_tokens(env: Mapping[str, str]) -> dict[str, str]:
    """The environment with placeholder token digests replaced by a well-formed one."""
    return {
        name: DUMMY_DIGEST if name.startswith("GATEWAY_TOKENS_") else value
        for name, value in env.items()
    }


def url_port(url: str) -> int:
    """The port of an http:// URL (80 when absent)."""
    return urlsplit(url).port or 80


# --- compose -------------------------------------------------------------------------------


@cache
def compose() -> Doc:
    """docker-compose.yml, parsed (YAML merge keys expanded)."""
    data: Doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


@cache
def env_example() -> dict[str, str]:
    """The variables documented in .env.example."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example: not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err} and ${VAR?err}."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        usable = bool(env.get(name)) if op.startswith(":") else name in env
        if usable:
            return env[name]
        if op.endswith("-"):
            return arg
        assert not op.endswith("?"), f"compose would stop: ${{{name}}} is required ({arg})"
        return ""

    return _INTERPOLATION.sub(substitute, value)


def compose_command(service: Doc) -> list[str]:
    """A service's command as an argument list."""
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def compose_env(service: Doc) -> dict[str, str]:
    """A service's environment as the container sees it, with .env.example as the .env."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    dotenv = with_dummy_tokens(env_example())
    return {name: interpolate(str(value), dotenv) for name, value in raw.items()}


def duration_s(text: str) -> float:
    """Compose duration ("30s", "1m30s") in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def healthcheck_url(test: list[str]) -> str:
    """The URL a compose healthcheck probes."""
    urls = [part for part in test if re.match(r"https?://", part)]
    assert len(urls) == 1, f"healthcheck should probe one URL: {test}"
    return urls[0]


def _assert_compose_spec(path: Path) -> None:
    """``path`` validates against the compose spec bundled in check-jsonschema."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    """docker-compose.yml validates against the compose spec bundled in check-jsonschema."""
    _assert_compose_spec(COMPOSE_FILE)


def test_compose_runs_broker_database_ingress_workers_and_proxy() -> None:
    """The stack has RabbitMQ, PostgreSQL, topology, ingress, one service per worker, a proxy."""
    services = compose()["services"]
    assert set(services) >= {"rabbitmq", "postgres", "proxy", *APP_SERVICES}
    for name in APP_SERVICES:
        assert services[name]["image"].split(":")[0] == APP_IMAGE, name
        assert services[name]["build"]["context"] == ".", name


def test_scaled_services_have_no_container_name_or_host_port() -> None:
    """`--scale ingress=3 --scale roaming=4` works: no fixed names or published ports."""
    services = compose()["services"]
    for name in SCALED_SERVICES:
        for key in ("container_name", "ports", "hostname"):
            assert key not in services[name], f"{name} sets {key}, so it cannot scale"
    assert services["proxy"]["ports"], "the proxy publishes the one port"


def test_compose_images_are_pinned() -> None:
    """Third-party images carry a version tag; RabbitMQ has the management plugin."""
    services = compose()["services"]
    for name, service in services.items():
        if name in APP_SERVICES:
            continue
        tag = service["image"].partition(":")[2]
        assert re.match(r"\d+(\.\d+)*", tag), f"{name}: {service['image']} has no version tag"
    assert re.fullmatch(r"rabbitmq:\d+\.\d+-management(-\w+)?", services["rabbitmq"]["image"])
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-\w+)?", services["postgres"]["image"])
    assert re.fullmatch(r"nginx:\d+\.\d+(\.\d+)?(-\w+)?", services["proxy"]["image"])


def test_backing_services_have_healthchecks_and_named_volumes() -> None:
    """RabbitMQ and PostgreSQL keep data in named volumes and report health."""
    data = compose()
    services = data["services"]
    rabbit_test = services["rabbitmq"]["healthcheck"]["test"]
    postgres_test = services["postgres"]["healthcheck"]["test"]
    assert "rabbitmq-diagnostics" in rabbit_test
    assert "ping" in rabbit_test
    assert "pg_isready" in postgres_test
    for name, target in (("rabbitmq", "/var/lib/rabbitmq"), ("postgres", "/var/lib/postgresql")):
        mounts = [str(v).split(":") for v in services[name]["volumes"]]
        named = [source for source, path, *_ in mounts if path.startswith(target)]
        assert named, f"{name} keeps no data volume"
        assert named[0] in data["volumes"], f"{name}: {named[0]} is not a named volume"


def test_app_services_wait_for_healthy_dependencies() -> None:
    """App services start once the broker (and database) are healthy and topology has run."""
    services = compose()["services"]

    def condition(service: str, dependency: str) -> str:
        depends = services[service].get("depends_on", {})
        assert isinstance(depends, dict), f"{service}: depends_on needs conditions"
        assert dependency in depends, f"{service} does not wait for {dependency}"
        return str(depends[dependency].get("condition"))

    for name in APP_SERVICES:
        assert condition(name, "rabbitmq") == "service_healthy"
    for name in BUILTIN_WORKERS:
        assert condition(name, "postgres") == "service_healthy"
    for name in SCALED_SERVICES:
        assert condition(name, "topology") == "service_completed_successfully"
    assert condition("proxy", "ingress") == "service_healthy"
    assert services["topology"]["restart"] == "no"
    assert compose_command(services["topology"]) == ["topology"]


def test_compose_commands_are_accepted_by_the_cli() -> None:
    """Each app service's command is a real `event-gateway` subcommand line."""
    services = compose()["services"]
    for name in APP_SERVICES:
        assert_cli_accepts(compose_command(services[name]), f"compose service {name}")
    assert compose_command(services["ingress"])[0] == "serve"
    for worker in BUILTIN_WORKERS:
        assert compose_command(services[worker])[:2] == ["consume", worker]


def test_compose_env_vars_are_known_and_load() -> None:
    """App environments use only the code's GATEWAY_* names and load into valid settings."""
    services = compose()["services"]
    for name in APP_SERVICES:
        env = compose_env(services[name])
        unknown = set(env) - code_env_vars()
        assert not unknown, f"compose service {name} sets unknown variables {sorted(unknown)}"
        settings = settings_for(env, f"compose service {name}")
        assert settings.amqp.url.startswith("amqp://")
        assert "@rabbitmq:5672" in settings.amqp.url
    for worker in BUILTIN_WORKERS:
        settings = settings_for(compose_env(services[worker]), worker)
        assert settings.state.url.startswith("postgresql://"), f"{worker} state must be shared"
        assert "@postgres:5432/" in settings.state.url
    ingress = settings_for(compose_env(services["ingress"]), "ingress")
    assert ingress.sources
    assert all(source.tokens for source in ingress.sources)


def test_compose_ports_and_healthchecks_match_the_code() -> None:
    """Ingress port, worker metrics ports and healthcheck URLs agree with the commands."""
    services = compose()["services"]
    ingress = settings_for(compose_env(services["ingress"]), "ingress")
    expose = {int(port) for port in services["ingress"].get("expose", [])}
    assert ingress.http.port in expose
    # No healthcheck override: the image's HEALTHCHECK, on ${GATEWAY_HTTP_PORT:-default}.
    assert "healthcheck" not in services["ingress"]
    assert dockerfile_healthcheck_default_port() == HttpSettings().port
    for worker in BUILTIN_WORKERS:
        service = services[worker]
        port = option_value(compose_command(service), "--metrics-port")
        assert port is not None, f"{worker} serves no /healthz without --metrics-port"
        url = healthcheck_url(service["healthcheck"]["test"])
        assert urlsplit(url).path == "/healthz"
        assert "/healthz" in served_paths(WORKER_PACKAGE)
        assert url_port(url) == int(port), f"{worker}: healthcheck port != --metrics-port"
        assert int(port) in {int(p) for p in service.get("expose", [])}
    proxy_url = healthcheck_url(services["proxy"]["healthcheck"]["test"])
    assert urlsplit(proxy_url).path in served_paths(INGRESS_PACKAGE)
    assert url_port(proxy_url) == nginx_listen_port()


def test_compose_stop_grace_covers_the_worker_drain() -> None:
    """Workers and ingress get longer to stop than the workers' drain timeout."""
    services = compose()["services"]
    drain = WorkerSettings().drain_timeout_s
    for name in SCALED_SERVICES:
        grace = duration_s(services[name].get("stop_grace_period", "10s"))
        assert grace > drain, f"{name}: stop_grace_period {grace}s <= drain {drain}s"


def test_tokens_come_from_the_env_file_never_baked_in() -> None:
    """Token digests are interpolated from .env; no digest is in any deployment file."""
    ingress_env = compose()["services"]["ingress"]["environment"]
    for name in (
        "GATEWAY_TOKENS_CAMARA",
        "GATEWAY_TOKENS_NOTIFY_STATUS",
        "GATEWAY_TOKENS_NOTIFY_INBOUND",
    ):
        assert re.fullmatch(r"\$\{" + name + r"[^}]*\}", ingress_env[name]), name
        assert name in env_example()
    files = [COMPOSE_FILE, DOCKERFILE, ENV_EXAMPLE, *DEPLOY.rglob("*")]
    for path in files:
        if path.is_file() and path.suffix != ".json":
            assert not DIGEST.search(path.read_text(encoding="utf-8")), f"digest in {path}"
    ignored = dockerignore_patterns()
    assert any(fnmatch.fnmatch(".env", pattern) for pattern in ignored)


def test_token_placeholders_are_refused_by_the_gateway() -> None:
    """Left-in placeholder digests stop the ingress with a config error, as documented."""
    env = compose_env(compose()["services"]["ingress"])
    env.update({name: value for name, value in env_example().items() if "TOKENS" in name})
    with pytest.raises(ConfigError):
        load_settings(None, env)


def test_env_example_documents_every_required_variable() -> None:
    """Every ${VAR} compose needs is in .env.example, and .env.example has no stale names."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = {match["name"]: match["op"] or "" for match in _INTERPOLATION.finditer(text)}
    documented = set(env_example())
    required = {name for name, op in used.items() if not op.endswith("-")}
    assert required <= documented, f"undocumented: {sorted(required - documented)}"
    assert documented <= set(used), f"unused in compose: {sorted(documented - set(used))}"


# --- nginx ---------------------------------------------------------------------------------


@cache
def nginx_conf() -> str:
    """deploy/nginx.conf without comments."""
    text = NGINX_CONF.read_text(encoding="utf-8")
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def nginx_listen_port() -> int:
    """The port nginx listens on inside its container."""
    match = re.search(r"^\s*listen\s+(?:[\d.]+:)?(\d+)", nginx_conf(), re.MULTILINE)
    assert match, "nginx.conf has no listen directive"
    return int(match[1])


def test_nginx_proxies_to_every_ingress_replica() -> None:
    """nginx re-resolves `ingress` through Docker DNS at request time, on the ingress port."""
    conf = nginx_conf()
    assert re.search(r"^\s*resolver\s+127\.0\.0\.11\b.*valid=\d+s", conf, re.MULTILINE)
    target = re.search(r"^\s*set\s+\$(\w+)\s+(http://[^;\s]+);", conf, re.MULTILINE)
    assert target, "proxy_pass must take its address from a variable to re-resolve replicas"
    variable, url = target[1], target[2]
    passes = re.findall(r"proxy_pass\s+([^;]+);", conf)
    assert set(passes) == {f"${variable}"}
    ingress_port = settings_for(compose_env(compose()["services"]["ingress"]), "ingress").http.port
    assert urlsplit(url).hostname == "ingress"
    assert url_port(url) == ingress_port
    locations = re.findall(r"location\s+(=\s*)?(\S+)\s*\{", conf)
    assert ("", "/callbacks/") in locations
    exact = {path for modifier, path in locations if modifier}
    assert exact <= served_paths(INGRESS_PACKAGE)


def test_nginx_is_wired_into_compose() -> None:
    """The proxy mounts deploy/nginx.conf and publishes the port nginx listens on."""
    proxy = compose()["services"]["proxy"]
    mounts = [str(volume).split(":") for volume in proxy["volumes"]]
    assert any(
        (ROOT / source).resolve() == NGINX_CONF and target == "/etc/nginx/nginx.conf"
        for source, target, *_ in mounts
    )
    published = [interpolate(str(port), env_example()) for port in proxy["ports"]]
    assert any(port.rsplit(":", 1)[-1] == str(nginx_listen_port()) for port in published)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    """`nginx -t` accepts deploy/nginx.conf."""
    result = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(tmp_path), "-e", "stderr", "-c", str(NGINX_CONF)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- Dockerfile ----------------------------------------------------------------------------


@cache
def dockerfile() -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) per instruction; stage -1 is before any FROM."""
    instructions: list[tuple[int, str, str]] = []
    stage, pending = -1, ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append((stage, keyword.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """Instructions of the last stage."""
    last = max(stage for stage, _, _ in dockerfile())
    return [(keyword, args) for stage, keyword, args in dockerfile() if stage == last]


def dockerfile_healthcheck_default_port() -> int:
    """The port in the image HEALTHCHECK's ${GATEWAY_HTTP_PORT:-port}."""
    checks = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1, "the final stage needs one HEALTHCHECK"
    match = re.search(r"\$\{GATEWAY_HTTP_PORT:-(\d+)\}", checks[0])
    assert match, "the HEALTHCHECK should follow GATEWAY_HTTP_PORT"
    return int(match[1])


@cache
def dockerignore_patterns() -> list[str]:
    """.dockerignore patterns (negations dropped)."""
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "!"))]


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    """Several FROM stages, a python:3.11 slim final base, and a non-root USER."""
    froms = [args for _, keyword, args in dockerfile() if keyword == "FROM"]
    assert len(froms) >= 2, "build in a builder stage, copy into a clean final stage"
    global_args = dict(
        args.split("=", 1)
        for stage, keyword, args in dockerfile()
        if stage == -1 and keyword == "ARG"
    )
    base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m[1]], froms[-1].split()[0])
    assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?", base), base
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the final stage needs a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    """Compilers and package installs stay in the builder; the final stage copies the result."""
    runs = " ".join(args for keyword, args in final_stage() if keyword == "RUN")
    for tool in ("apt-get install", "build-essential", "gcc", "pip install", "pip wheel"):
        assert tool not in runs, f"final stage runs {tool}"
    copies = [args for keyword, args in final_stage() if keyword == "COPY"]
    assert any(args.startswith("--from=") for args in copies)


def test_dockerfile_healthcheck_uses_stdlib_on_healthz() -> None:
    """The HEALTHCHECK asks /healthz with Python's stdlib, on the default ingress port."""
    check = next(args for keyword, args in final_stage() if keyword == "HEALTHCHECK")
    assert "CMD python" in check
    assert "urllib.request" in check
    assert not re.search(r"\b(curl|wget)\b", check)
    assert "http://127.0.0.1:" in check
    assert "/healthz" in check
    assert "/healthz" in served_paths(INGRESS_PACKAGE)
    assert dockerfile_healthcheck_default_port() == HttpSettings().port


def test_dockerfile_entrypoint_command_and_ports_match_the_code() -> None:
    """ENTRYPOINT is the console script, CMD a real subcommand, EXPOSE the default ports."""
    stage = final_stage()
    entrypoint = json.loads(next(args for keyword, args in stage if keyword == "ENTRYPOINT"))
    command = json.loads(next(args for keyword, args in stage if keyword == "CMD"))
    assert entrypoint == [APP_IMAGE]
    assert_cli_accepts(command, "Dockerfile CMD")
    exposed = {int(port) for keyword, args in stage if keyword == "EXPOSE" for port in args.split()}
    assert HttpSettings().port in exposed
    assert 9100 in exposed
    env_names = set(GATEWAY_VAR.findall(DOCKERFILE.read_text(encoding="utf-8")))
    assert env_names <= code_env_vars(), sorted(env_names - code_env_vars())


def test_dockerfile_copies_sources_the_build_context_keeps() -> None:
    """Every COPY source exists and is not excluded by .dockerignore."""
    ignored = dockerignore_patterns()
    for _, keyword, args in dockerfile():
        if keyword != "COPY" or args.startswith("--from="):
            continue
        *sources, _destination = [part for part in args.split() if not part.startswith("--")]
        for source in sources:
            if "*" not in source:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            top = PurePosixPath(source).parts[0]
            assert not any(fnmatch.fnmatch(top, pattern) for pattern in ignored), (
                f"COPY {source}: excluded by .dockerignore"
            )


# --- Kubernetes ----------------------------------------------------------------------------


def kustomize(directory: Path) -> list[Doc]:
    """`kubectl kustomize DIR`, parsed into documents."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    """The rendered base and example overlay."""
    return {name: kustomize(path) for name, path in KUSTOMIZATIONS.items()}


@pytest.fixture(scope="module")
def overlay(rendered: dict[str, list[Doc]]) -> list[Doc]:
    """The rendered example overlay."""
    return rendered["example"]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    """Documents of one kind (and name)."""
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    """The single document of this kind and name."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def app_containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(Deployment, container) for every container, init ones too, running the gateway image."""
    for deployment in find(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            if re.search(rf"(^|/){APP_IMAGE}(:|@|$)", container["image"]):
                yield deployment, container


def secret_value(docs: list[Doc], name: str, key: str) -> str:
    """A key of a rendered Secret, decoded."""
    secret = one(docs, "Secret", name)
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    assert key in secret.get("data", {}), f"Secret {name} has no key {key}"
    return base64.b64decode(secret["data"][key]).decode()


def container_env(
    docs: list[Doc], deployment: Doc, container: Doc, config_dir: Path
) -> dict[str, str]:
    """The container's environment, Secrets resolved and GATEWAY_CONFIG copied to config_dir."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_value(docs, ref["name"], ref["key"])
    assert "envFrom" not in container, "name each variable so it can be checked"
    if "GATEWAY_CONFIG" in env:
        path = PurePosixPath(env["GATEWAY_CONFIG"])
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert str(path.parent) in mounts, f"nothing is mounted at {path.parent}"
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        config_map = one(docs, "ConfigMap", volumes[mounts[str(path.parent)]]["configMap"]["name"])
        local = config_dir / path.name
        local.write_text(config_map["data"][path.name], encoding="utf-8")
        env["GATEWAY_CONFIG"] = str(local)
    return env


def named_ports(container: Doc) -> dict[str | int, int]:
    """Container ports by name and by number."""
    ports: dict[str | int, int] = {}
    for port in container.get("ports", []):
        ports[port["containerPort"]] = port["containerPort"]
        if "name" in port:
            ports[port["name"]] = port["containerPort"]
    return ports


def strict_schema(schema: Any) -> Any:
    """The schema with additionalProperties: false wherever properties are listed."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: strict_schema(value) for key, value in schema.items()}
    if (
        isinstance(strict.get("properties"), dict)
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


@cache
def custom_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """A strict validator for a custom resource, from the schema vendored in deploy/schemas."""
    path = SCHEMAS / {**CUSTOM_SCHEMAS, **MONITORING_SCHEMAS}[(api_version, kind)]
    schema = strict_schema(json.loads(path.read_text(encoding="utf-8")))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def kubernetes_validate(docs: list[Doc], version: str, tmp_path: Path) -> tuple[int, str]:
    """`kubernetes-validate --strict` on the documents; (exit code, output)."""
    manifest = tmp_path / f"manifest-{version}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kustomize_renders(rendered: dict[str, list[Doc]], name: str) -> None:
    """`kubectl kustomize` renders the base and the example overlay."""
    assert rendered[name]


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_pass_kubernetes_validate_strict(
    rendered: dict[str, list[Doc]], name: str, version: str, tmp_path: Path
) -> None:
    """Every built-in document passes kubernetes-validate --strict with its bundled schemas."""
    docs = [d for d in rendered[name] if (d["apiVersion"], d["kind"]) not in CUSTOM_SCHEMAS]
    code, output = kubernetes_validate(docs, version, tmp_path)
    assert code == 0, output
    assert not re.search(r"^(WARN|ERROR|FATAL)", output, re.MULTILINE), output
    assert output.count(" passed for resource ") == len(docs), output


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path) -> None:
    """The strict validation really rejects a misspelt field (no silent pass offline)."""
    broken = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80, "targetPortt": 8080}]},
    }
    code, output = kubernetes_validate([broken], K8S_VERSIONS[-1], tmp_path)
    assert code != 0, output


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_custom_resources_match_vendored_schemas(rendered: dict[str, list[Doc]], name: str) -> None:
    """ScaledObjects, the TriggerAuthentication and the RabbitmqCluster match their schemas."""
    custom = [d for d in rendered[name] if (d["apiVersion"], d["kind"]) in CUSTOM_SCHEMAS]
    assert {d["kind"] for d in custom} == {k for _, k in CUSTOM_SCHEMAS}
    for doc in custom:
        errors = list(custom_validator(doc["apiVersion"], doc["kind"]).iter_errors(doc))
        messages = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
        assert not messages, f"{doc['kind']}/{doc['metadata']['name']}: {messages}"


def test_custom_resource_check_rejects_unknown_fields() -> None:
    """The vendored-schema check catches a misspelt ScaledObject field."""
    broken = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "minReplicas": 1, "triggers": []},
    }
    validator = custom_validator("keda.sh/v1alpha1", "ScaledObject")
    assert not validator.is_valid(broken)


def test_overlay_has_every_piece(overlay: list[Doc]) -> None:
    """Ingress Deployment, Service, HPA and PDB; a Deployment and ScaledObject per worker; more."""
    deployments = {d["metadata"]["name"] for d in find(overlay, "Deployment")}
    assert deployments >= {
        "event-gateway-ingress",
        *(f"event-gateway-{w}" for w in BUILTIN_WORKERS),
    }
    hpa = one(overlay, "HorizontalPodAutoscaler", "event-gateway-ingress")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "event-gateway-ingress",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    for name in ("event-gateway-ingress", *(f"event-gateway-{w}" for w in BUILTIN_WORKERS)):
        assert "replicas" not in one(overlay, "Deployment", name)["spec"], (
            f"{name}: the autoscaler owns the replica count"
        )
    pods = one(overlay, "Deployment", "event-gateway-ingress")["spec"]["template"]["metadata"]
    pdb = one(overlay, "PodDisruptionBudget", "event-gateway-ingress")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pods["labels"].items()
    service = one(overlay, "Service", "event-gateway-ingress")
    assert service["spec"]["selector"].items() <= pods["labels"].items()
    ingress_ports = named_ports(
        one(overlay, "Deployment", "event-gateway-ingress")["spec"]["template"]["spec"][
            "containers"
        ][0]
    )
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ingress_ports
    cluster = find(overlay, "RabbitmqCluster")
    assert len(cluster) == 1
    assert cluster[0]["spec"]["replicas"] == 3
    assert len(find(overlay, "ScaledObject")) == len(BUILTIN_WORKERS)
    assert find(overlay, "TriggerAuthentication")


def test_overlay_references_resolve(overlay: list[Doc]) -> None:
    """Secret, ConfigMap, ServiceAccount, scale-target and auth references name real objects."""
    for workload in find(overlay, "Deployment") + find(overlay, "StatefulSet"):
        spec = workload["spec"]["template"]["spec"]
        if "serviceAccountName" in spec:
            one(overlay, "ServiceAccount", spec["serviceAccountName"])
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                one(overlay, "ConfigMap", volume["configMap"]["name"])
        for container in spec.get("initContainers", []) + spec["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret_value(overlay, ref["name"], ref["key"])
    for scaled in find(overlay, "ScaledObject"):
        one(overlay, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        for trigger in scaled["spec"]["triggers"]:
            one(overlay, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    for auth in find(overlay, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            secret_value(overlay, ref["name"], ref["key"])
    cluster = find(overlay, "RabbitmqCluster")[0]["metadata"]["name"]
    one(overlay, "Secret", f"{cluster}-default-user")


def test_k8s_commands_are_accepted_by_the_cli(overlay: list[Doc]) -> None:
    """Every gateway container runs `event-gateway` with arguments the CLI accepts."""
    commands = []
    for deployment, container in app_containers(overlay):
        where = f"{deployment['metadata']['name']}/{container['name']}"
        assert container["command"] == [APP_IMAGE], where
        assert_cli_accepts([str(arg) for arg in container["args"]], where)
        commands.append(container["args"][:2])
    assert ["serve"] in commands
    for worker in BUILTIN_WORKERS:
        assert ["consume", worker] in commands


def test_k8s_env_config_ports_and_probes_match_the_code(overlay: list[Doc], tmp_path: Path) -> None:
    """Env names, the mounted TOML, ports, probe paths and grace periods agree with the code."""
    seen_workers = set()
    for deployment, container in app_containers(overlay):
        name = deployment["metadata"]["name"]
        where = f"{name}/{container['name']}"
        config_dir = tmp_path / name / container["name"]
        config_dir.mkdir(parents=True)
        env = container_env(overlay, deployment, container, config_dir)
        unknown = set(env) - code_env_vars()
        assert not unknown, f"{where} sets unknown variables {sorted(unknown)}"
        settings = settings_for(with_dummy_tokens(env), where)
        assert "GATEWAY_CONFIG" in env, (
            f"{where}: mount the ConfigMap and point GATEWAY_CONFIG at it"
        )
        assert settings.amqp.url.startswith(("amqp://", "amqps://"))
        pod = deployment["spec"]["template"]
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        assert grace > settings.workers.drain_timeout_s, f"{where}: grace {grace}s <= drain"
        ports = named_ports(container)
        probes = {
            kind: container[kind]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
            if kind in container
        }
        args = [str(arg) for arg in container["args"]]
        served = served_paths(INGRESS_PACKAGE if args[0] == "serve" else WORKER_PACKAGE)
        for probe in probes.values():
            assert probe["httpGet"]["path"] in served, f"{where}: the process serves {served}"
            assert probe["httpGet"]["port"] in ports, f"{where}: probe port not a container port"
        annotations = pod["metadata"].get("annotations", {})
        if args[0] == "serve":
            assert ports == {"http": settings.http.port, settings.http.port: settings.http.port}
            assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert all(source.tokens for source in settings.sources), f"{where}: no token digests"
            assert int(annotations["prometheus.io/port"]) == settings.http.port
        elif args[0] == "consume":
            worker = args[1]
            seen_workers.add(worker)
            metrics_port = int(option_value(args, "--metrics-port") or 0)
            assert metrics_port, f"{where}: a worker needs --metrics-port for its probes"
            assert metrics_port in ports.values()
            liveness = probes["livenessProbe"]["httpGet"]
            assert liveness["path"] == "/healthz"
            assert ports[liveness["port"]] == metrics_port
            # Liveness only asks "is the process alive": a broker outage must not restart it.
            readiness = probes["readinessProbe"]["httpGet"]
            assert readiness["path"] == "/readyz"
            assert ports[readiness["port"]] == metrics_port
            assert int(annotations["prometheus.io/port"]) == metrics_port
            assert settings.state.url.startswith(("postgresql://", "postgres://")), (
                f"{where}: worker replicas must share a PostgreSQL state store"
            )
            scaled = [
                s
                for s in find(overlay, "ScaledObject")
                if s["spec"]["scaleTargetRef"]["name"] == name
            ]
            assert len(scaled) == 1, f"{name}: one ScaledObject should scale it"
            (trigger,) = scaled[0]["spec"]["triggers"]
            assert trigger["type"] == "rabbitmq"
            assert trigger["metadata"]["queueName"] == f"{settings.amqp.exchange}.{worker}"
        else:
            assert args[0] == "topology", f"{where}: unexpected command {args}"
        if annotations.get("prometheus.io/scrape") == "true":
            assert annotations["prometheus.io/path"] == "/metrics"
            assert "/metrics" in served
    assert seen_workers == set(BUILTIN_WORKERS)


def test_base_config_file_is_valid_toml_for_the_gateway(tmp_path: Path) -> None:
    """deploy/base/gateway.toml loads, queues are quorum, and drain fits the 30 s grace."""
    path = KUSTOMIZATIONS["base"] / "gateway.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    assert "url" not in raw.get("amqp", {}), "the broker URL belongs in a Secret"
    assert "state" not in raw, "the state URL belongs in a Secret"
    settings = settings_for({"GATEWAY_CONFIG": str(path)}, str(path))
    assert settings.amqp.queue_type == "quorum"
    assert settings.workers.drain_timeout_s < 30


def test_example_overlay_credentials_agree(overlay: list[Doc]) -> None:
    """The example's broker and database URLs use the users and hosts it creates."""
    amqp = urlsplit(secret_value(overlay, broker_secret(overlay), "amqp-url"))
    cluster = find(overlay, "RabbitmqCluster")[0]["metadata"]["name"]
    default_user = f"{cluster}-default-user"
    assert amqp.hostname == cluster
    assert amqp.username == secret_value(overlay, default_user, "username")
    assert amqp.password == secret_value(overlay, default_user, "password")
    conf = secret_value(overlay, default_user, "default_user.conf")
    assert f"default_user = {amqp.username}" in conf
    assert f"default_pass = {amqp.password}" in conf
    state_ref = next(
        item["valueFrom"]["secretKeyRef"]
        for _, container in app_containers(overlay)
        for item in container.get("env", [])
        if item["name"] == "GATEWAY_STATE_URL"
    )
    state = urlsplit(secret_value(overlay, state_ref["name"], state_ref["key"]))
    postgres = one(overlay, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    postgres_env = {item["name"]: item for item in postgres["env"]}
    password_ref = postgres_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert state.hostname == one(overlay, "Service", "postgres")["metadata"]["name"]
    assert state.username == postgres_env["POSTGRES_USER"]["value"]
    assert state.password == secret_value(overlay, password_ref["name"], password_ref["key"])
    assert state.path.lstrip("/") == postgres_env["POSTGRES_DB"]["value"]


def broker_secret(docs: list[Doc]) -> str:
    """The name of the Secret the TriggerAuthentication reads the AMQP URL from."""
    (auth,) = find(docs, "TriggerAuthentication")
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    return str(ref["name"])


def test_deploy_readme_says_how_to_apply_and_scale() -> None:
    """deploy/README.md gives the apply command and names both autoscalers."""
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert "kubectl apply -k deploy/overlays/example" in text
    assert "HorizontalPodAutoscaler" in text
    assert "ScaledObject" in text


# --- monitoring (deploy/monitoring) ---------------------------------------------------------

PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool (Debian package prometheus) is not installed"
# The alerts §9 asks for, by name.
CONTRACT_ALERTS = {
    "EventGatewayDeadLettersGrowing",
    "EventGatewayServerErrors",
    "EventGatewayNotReady",
    "EventGatewayRejectedGrowing",
    "EventGatewayBrokerReconnects",
}
METRIC_NAME = re.compile(r"\b(?:event_gateway|gateway|process|python)_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def monitoring() -> list[Doc]:
    """deploy/monitoring, rendered."""
    return kustomize(MONITORING)


@cache
def prometheus_rule_spec() -> Doc:
    """spec of deploy/monitoring/prometheus-rule.yaml: a plain Prometheus rules file."""
    doc = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text(encoding="utf-8"))
    spec: Doc = doc["spec"]
    return spec


@cache
def dashboard() -> Doc:
    """deploy/monitoring/grafana-dashboard.json, parsed."""
    data: Doc = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return data


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard, Grafana's variables given plain values."""
    exprs = [
        str(target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]
    return [e.replace("$__rate_interval", "5m").replace("$namespace", ".*") for e in exprs]


def alert_exprs() -> list[str]:
    return [
        str(rule["expr"]) for group in prometheus_rule_spec()["groups"] for rule in group["rules"]
    ]


@cache
def exported_metric_names() -> frozenset[str]:
    """Every sample name the ingress and worker registries expose (process collectors too)."""
    from consumers.metrics import WorkerMetrics
    from gateway.metrics import IngressMetrics

    ingress = IngressMetrics(lambda: True)
    ingress.observe("camara", 204, 0.01)
    workers = WorkerMetrics()
    workers.prepare("events.roaming")
    names = set()
    for registry in (ingress.registry, workers.registry):
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
    return frozenset(names)


def test_monitoring_resources_match_their_schemas(monitoring: list[Doc], tmp_path: Path) -> None:
    """The ServiceMonitor, PodMonitor and PrometheusRule match their vendored CRD schemas, and
    the dashboard ConfigMap passes kubernetes-validate --strict."""
    kinds = {doc["kind"] for doc in monitoring}
    assert kinds == {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    for doc in monitoring:
        if (doc["apiVersion"], doc["kind"]) in MONITORING_SCHEMAS:
            errors = list(custom_validator(doc["apiVersion"], doc["kind"]).iter_errors(doc))
            messages = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
            assert not messages, f"{doc['kind']}/{doc['metadata']['name']}: {messages}"
    builtin = [doc for doc in monitoring if doc["kind"] == "ConfigMap"]
    code, output = kubernetes_validate(builtin, K8S_VERSIONS[-1], tmp_path)
    assert code == 0, output
    (config_map,) = builtin
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["grafana-dashboard.json"]) == dashboard()


def test_monitoring_schema_check_rejects_unknown_fields() -> None:
    """The vendored-schema check catches a misspelt ServiceMonitor endpoint field."""
    broken = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "pathh": "/metrics"}]},
    }
    assert not custom_validator("monitoring.coreos.com/v1", "ServiceMonitor").is_valid(broken)


def labels_match(selector: Doc, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and In/NotIn/Exists) against labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def test_service_monitor_scrapes_the_ingress(monitoring: list[Doc], overlay: list[Doc]) -> None:
    """The ServiceMonitor selects the ingress Service, in the overlay's namespace, on a Service
    port whose target serves /metrics."""
    (monitor,) = find(monitoring, "ServiceMonitor")
    service = one(overlay, "Service", "event-gateway-ingress")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert labels_match(monitor["spec"]["selector"], service["metadata"]["labels"])
    selected = [
        s
        for s in find(overlay, "Service")
        if labels_match(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
    ]
    assert selected == [service], "the ServiceMonitor must select the ingress Service only"
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"
        assert "/metrics" in served_paths(INGRESS_PACKAGE)


def test_pod_monitor_scrapes_every_worker(monitoring: list[Doc], overlay: list[Doc]) -> None:
    """The PodMonitor selects each built-in worker's pods (and not the ingress's) on the named
    port that is the worker's --metrics-port."""
    (monitor,) = find(monitoring, "PodMonitor")
    selector = monitor["spec"]["selector"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    selected = set()
    for deployment, container in app_containers(overlay):
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        args = [str(arg) for arg in container["args"]]
        if not labels_match(selector, pod_labels):
            assert args[0] != "consume", f"{deployment['metadata']['name']} is not scraped"
            continue
        assert args[0] == "consume", f"the PodMonitor selects {deployment['metadata']['name']}"
        selected.add(args[1])
        ports = named_ports(container)
        assert ports[endpoint["port"]] == int(option_value(args, "--metrics-port") or 0)
    assert selected == set(BUILTIN_WORKERS)


def test_alerts_cover_dlq_5xx_readiness_rejected_and_reconnects() -> None:
    """Every alert §9 names is there, with a severity, a summary and a description."""
    rules = [rule for group in prometheus_rule_spec()["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} >= CONTRACT_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    """Every metric the dashboard and the alerts query is one the code exports."""
    used = {
        name for expr in dashboard_exprs() + alert_exprs() for name in METRIC_NAME.findall(expr)
    }
    assert used, "no metric found in the expressions"
    unknown = used - exported_metric_names()
    assert not unknown, sorted(unknown)


def test_dashboard_is_a_grafana_dashboard() -> None:
    """Unique panel ids, a Prometheus datasource variable, every panel on it with a query."""
    data = dashboard()
    assert data["uid"]
    assert data["title"]
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_alert_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    """`promtool check rules` accepts the alerts and `promtool test rules` fires each as meant."""
    assert PROMTOOL is not None
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rule_spec()), encoding="utf-8")
    tests = tmp_path / "prometheus-rule.test.yaml"
    shutil.copy(MONITORING / "prometheus-rule.test.yaml", tests)
    for command in (["check", "rules", str(rules)], ["test", "rules", str(tests)]):
        result = subprocess.run(
            [PROMTOOL, *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    tested = yaml.safe_load(tests.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for group in tested["tests"]
        for case in group["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired >= CONTRACT_ALERTS, sorted(CONTRACT_ALERTS - fired)


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL (checked as recording rules by promtool)."""
    assert PROMTOOL is not None
    rules = [{"record": f"dashboard:query:{i}", "expr": e} for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- development dependencies (docker-compose.deps.yml) -------------------------------------

DEPS_COMPOSE_FILE = ROOT / "docker-compose.deps.yml"
DEPS_COMMAND = "docker compose -f docker-compose.deps.yml up -d --wait"


@cache
def deps_compose() -> Doc:
    data: Doc = yaml.safe_load(DEPS_COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def published(service: Doc, container_port: int) -> tuple[str, int]:
    """(host address, host port) a service publishes ``container_port`` on (short syntax)."""
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        if int(parts[-1]) == container_port:
            return (parts[0] if len(parts) == 3 else "0.0.0.0"), int(parts[-2])
    pytest.fail(f"port {container_port} is not published")


def test_deps_compose_file_matches_the_compose_spec() -> None:
    """docker-compose.deps.yml validates against the compose spec bundled in check-jsonschema."""
    _assert_compose_spec(DEPS_COMPOSE_FILE)


def test_deps_rabbitmq_is_what_make_run_and_the_tests_expect() -> None:
    """RabbitMQ on 127.0.0.1:5672 with the user and password of config/dev.toml and of the
    test suite's default broker URL; the image is the stack's."""
    from tests.broker import AMQP_URL

    rabbitmq = deps_compose()["services"]["rabbitmq"]
    assert rabbitmq["image"] == compose()["services"]["rabbitmq"]["image"]
    dev = load_settings(str(ROOT / "config" / "dev.toml"), {})
    for url in (dev.amqp.url, "amqp://guest:guest@127.0.0.1:5672/", AMQP_URL):
        parts = urlsplit(url)
        assert published(rabbitmq, 5672) == (parts.hostname, parts.port or 5672), url
        assert rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"] == parts.username
        assert rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"] == parts.password
    assert "rabbitmq-diagnostics" in rabbitmq["healthcheck"]["test"]


def test_deps_postgres_is_what_the_tests_expect() -> None:
    """PostgreSQL on 127.0.0.1:5432, user postgres without a password (trust), database test:
    the test suite's default URL."""
    from tests.broker import POSTGRES_URL

    postgres = deps_compose()["services"]["postgres"]
    parts = urlsplit(POSTGRES_URL)
    env = postgres["environment"]
    assert published(postgres, 5432) == (parts.hostname, parts.port or 5432)
    assert env["POSTGRES_USER"] == parts.username
    assert parts.password is None
    assert env["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert env["POSTGRES_DB"] == parts.path.lstrip("/")
    assert "pg_isready" in postgres["healthcheck"]["test"]


def test_quick_start_and_service_hints_give_the_deps_command() -> None:
    """README's quick start and `make run`'s one-line hint name the command that starts them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert DEPS_COMMAND in readme
    assert DEPS_COMMAND in (ROOT / "scripts" / "check_services.py").read_text(encoding="utf-8")
    assert "docker compose up -d rabbitmq" not in readme
