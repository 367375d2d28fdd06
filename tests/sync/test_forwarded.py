"""Behind a reverse proxy: the client's address and scheme, believed only from trusted proxies."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from sync_fixtures import PASSWORD, Client, as_user

from sync import cli
from sync.app import create_app
from sync.config import Config, ConfigError, from_env
from sync.forwarded import ProxyConfigError, client_address, parse_networks

PROXIES = parse_networks("127.0.0.1, 10.0.0.0/8")
IP_LIMIT = 50  # sync.auth.LOGIN_LIMITS["ip"]


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["198.51.100.1, 203.0.113.7"], "203.0.113.7"),  # right-most wins
        ("127.0.0.1", ["203.0.113.7, 10.1.2.3"], "203.0.113.7"),  # our own hops skipped
        ("127.0.0.1", ["198.51.100.1", "203.0.113.7"], "203.0.113.7"),  # repeated header
        ("127.0.0.1", ["2001:db8::5"], "2001:db8::5"),
        ("127.0.0.1", ["10.0.0.9"], None),  # only proxies: keep the peer
        ("127.0.0.1", ["not-an-address"], None),
        ("127.0.0.1", ["203.0.113.7, nonsense"], None),
        ("127.0.0.1", [], None),
        ("192.0.2.50", ["203.0.113.7"], None),  # an untrusted peer names no one
        (None, ["203.0.113.7"], None),
    ],
)
def test_client_address(peer: str | None, headers: list[str], expected: str | None) -> None:
    assert client_address(peer, headers, PROXIES) == expected


def test_trusted_proxies_from_the_environment() -> None:
    config = from_env(env={"FIELDSYNC_TRUSTED_PROXIES": " 10.0.0.0/8 ,192.168.1.1,"})
    assert [str(n) for n in config.trusted_proxies] == ["10.0.0.0/8", "192.168.1.1/32"]
    with pytest.raises(ProxyConfigError, match=re.escape("'10.0.0.300' is not an IP address")):
        parse_networks("10.0.0.300")
    with pytest.raises(ConfigError, match=re.escape("FIELDSYNC_TRUSTED_PROXIES='proxy.local'")):
        from_env(env={"FIELDSYNC_TRUSTED_PROXIES": "proxy.local"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FIELDSYNC_PORT": "80a"}, re.escape("FIELDSYNC_PORT='80a': must be a whole number")),
        ({"FIELDSYNC_REQUIRE_ENROLMENT": "flase"}, "must be one of 1/true/yes/on"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env=env)


@pytest.mark.parametrize(("word", "value"), [("on", True), ("0", False), (" No ", False)])
def test_switches(word: str, value: bool) -> None:
    assert from_env(env={"FIELDSYNC_REQUIRE_ENROLMENT": word}).require_enrolment is value


async def _guess(client: Client, n: int, forwarded_for: str) -> int:
    headers = {**as_user(f"nobody-{n}", "wrong"), "X-Forwarded-For": forwarded_for}
    return (await client.get("/health/", headers=headers)).status


@pytest.fixture
def app_client(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> Callable[[Config], Awaitable[Client]]:
    async def make(changed: Config) -> Client:
        return await aiohttp_client(create_app(changed))

    return make


async def test_guessing_is_limited_per_client_behind_a_trusted_proxy(
    app_client: Callable[[Config], Awaitable[Client]], config: Config
) -> None:
    client = await app_client(replace(config, trusted_proxies=PROXIES))
    statuses = [await _guess(client, n, "203.0.113.7") for n in range(IP_LIMIT + 1)]
    assert statuses[:IP_LIMIT] == [401] * IP_LIMIT and statuses[IP_LIMIT] == 429
    assert await _guess(client, 999, "203.0.113.8") == 401  # another phone, same proxy


async def test_the_header_means_nothing_from_an_untrusted_peer(
    app_client: Callable[[Config], Awaitable[Client]], config: Config
) -> None:
    client = await app_client(config)  # no trusted proxies: the peer is the client
    for n in range(IP_LIMIT):
        assert await _guess(client, n, f"203.0.113.{n % 200}") == 401
    assert await _guess(client, 999, "198.51.100.77") == 429  # a fresh "address" is no escape


@pytest.mark.parametrize(("trusted", "secure"), [(True, True), (False, False)])
async def test_cookies_are_secure_when_the_proxy_spoke_https(
    app_client: Callable[[Config], Awaitable[Client]],
    config: Config,
    trusted: bool,
    secure: bool,
) -> None:
    client = await app_client(replace(config, trusted_proxies=PROXIES if trusted else ()))
    response = await client.post(
        "/_session",
        json={"name": "alice", "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert response.status == 200
    assert bool(response.cookies["AuthSession"]["secure"]) is secure


def test_the_cli_names_a_bad_setting_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("FIELDSYNC_TRUSTED_PROXIES", "proxy.local")
    assert cli.main(["place", "list", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fieldsync: FIELDSYNC_TRUSTED_PROXIES='proxy.local': trusted proxy")
