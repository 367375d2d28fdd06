"""The pieces of sync.serving that need no server: settings, caps, addresses, log lines.

The behaviour against real sockets is in tests/clients/test_slow_clients.py.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from typing import Any

import pytest
from structlog.testing import capture_logs

from sync.config import Config, ConfigError, from_env
from sync.forwarded import parse_networks
from sync.serving import HEADROOM_FILES, Gate, Limits, Trouble, connection_budget

LIMITS = Limits(header_timeout=20, body_timeout=60, keepalive_timeout=75, per_address=2, total=3)


def test_settings_come_from_the_environment() -> None:
    config = from_env(
        env={
            "FIELDSYNC_HEADER_TIMEOUT_SECONDS": "1.5",
            "FIELDSYNC_BODY_TIMEOUT_SECONDS": "45",
            "FIELDSYNC_KEEPALIVE_TIMEOUT_SECONDS": "30",
            "FIELDSYNC_MAX_CONNECTIONS_PER_ADDRESS": "50",
            "FIELDSYNC_MAX_CONNECTIONS": "900",
        }
    )
    assert (config.header_timeout_seconds, config.body_timeout_seconds) == (1.5, 45.0)
    assert config.keepalive_timeout_seconds == 30.0
    assert (config.max_connections_per_address, config.max_connections) == (50, 900)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FIELDSYNC_HEADER_TIMEOUT_SECONDS", "0"),
        ("FIELDSYNC_BODY_TIMEOUT_SECONDS", "-1"),
        ("FIELDSYNC_KEEPALIVE_TIMEOUT_SECONDS", "soon"),
        ("FIELDSYNC_HEADER_TIMEOUT_SECONDS", "inf"),
        ("FIELDSYNC_MAX_CONNECTIONS_PER_ADDRESS", "0"),
        ("FIELDSYNC_MAX_CONNECTIONS", "-5"),
        ("FIELDSYNC_MAX_CONNECTIONS", "many"),
    ],
)
def test_a_setting_that_would_disable_a_guard_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_env(env={name: value})


@pytest.mark.parametrize(
    ("open_files", "configured", "expected"),
    [
        (1024, 0, 1024 - HEADROOM_FILES),  # room for our own files
        (65536, 0, 65536 - HEADROOM_FILES),
        (1024, 500, 500),  # a lower setting wins
        (1024, 5000, 1024 - HEADROOM_FILES),  # a higher one cannot exhaust the files
        (256, 0, 64),  # a tiny limit still leaves a quarter
    ],
)
def test_the_global_cap_stays_below_the_open_file_limit(
    open_files: int, configured: int, expected: int
) -> None:
    assert connection_budget(open_files, configured) == expected


def test_limits_take_the_budget_from_the_open_file_limit() -> None:
    limits = Limits.from_config(Config(max_connections_per_address=7), 1024)
    assert (limits.per_address, limits.total) == (7, 1024 - HEADROOM_FILES)


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("203.0.113.7", 50000), "203.0.113.7"),
        (("::ffff:203.0.113.7", 50000, 0, 0), "203.0.113.7"),  # IPv4 on a dual-stack socket
        (("2001:db8:1:2:aaaa::1", 50000, 0, 0), "2001:db8:1:2::/64"),  # one subscriber's /64
        (("2001:db8:1:2:bbbb::9", 50000, 0, 0), "2001:db8:1:2::/64"),
        (("fe80::1%eth0", 50000, 0, 2), "fe80::/64"),
        (("10.0.0.5", 443), None),  # a trusted proxy: many clients, no per-address cap
        ("/run/fieldsync.sock", None),
        (None, None),
    ],
)
def test_the_address_a_cap_applies_to(peer: Any, key: str | None) -> None:
    gate = Gate(LIMITS, parse_networks("10.0.0.0/24"), Trouble())
    assert gate.key(peer) == key


def test_the_gate_refuses_past_either_cap_and_counts_refusals() -> None:
    trouble = Trouble()
    gate = Gate(LIMITS, (), trouble)
    assert [gate.admit("a"), gate.admit("a"), gate.admit("a")] == [True, True, False]
    assert gate.admit("b") is True
    assert gate.admit("c") is False  # three open: the server is full
    assert gate.admit(None) is False
    gate.release("a")
    assert gate.admit(None) is True  # a proxy's connection counts toward the total only
    assert gate.open_connections == 3
    with capture_logs() as logs:
        trouble.flush()
    refused = {(log["reason"], log["count"]) for log in logs}
    assert refused == {("per_address", 1), ("server_full", 2)}


def test_trouble_is_one_line_per_kind_per_interval() -> None:
    trouble = Trouble(interval=60)
    for _ in range(1000):
        trouble.note("header_timeouts")
    trouble.note("bad_requests")
    with capture_logs() as logs:
        trouble.flush()
        trouble.flush()  # nothing new: nothing logged
    assert [(log["event"], log["count"]) for log in logs] == [
        ("bad_requests", 1),
        ("header_timeouts", 1000),
    ]
    assert all(log["in_last_seconds"] == 60 for log in logs)


def _in_child(code: str) -> list[str]:
    """What ``code`` prints, run in a new interpreter (process-wide settings stay ours)."""
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout.split()


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    """Run in a child: the limit of this test process must not change."""
    code = (
        "import resource\n"
        "from sync.serving import raise_open_file_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "now = raise_open_file_limit()\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now, now\n"
        "print(now, hard)\n"
    )
    out = _in_child(code)
    now, hard = int(out[0]), int(out[1])
    expected = hard if hard != resource.RLIM_INFINITY else now
    assert now == expected
    assert now > 256 or hard <= 256


def test_the_garbage_collector_is_settled_once_started_and_still_frees_cycles() -> None:
    """Run in a child: this test process's collector must not change.

    What existed at start is frozen (never scanned again), young collections wait
    for 20,000 new objects, and garbage cycles made after that are still freed."""
    code = (
        "import gc, weakref\n"
        "from sync.serving import GC_YOUNG, settle_garbage_collector\n"
        "settle_garbage_collector()\n"
        "frozen, threshold = gc.get_freeze_count(), gc.get_threshold()\n"
        "class Node:\n"
        "    pass\n"
        "watched = []\n"
        "for n in range(6 * GC_YOUNG):\n"
        "    a, b = Node(), Node()\n"
        "    a.other, b.other = b, a\n"
        "    if n % 1000 == 0:\n"
        "        watched.append(weakref.ref(a))\n"
        "    del a, b\n"
        "freed = sum(ref() is None for ref in watched)\n"
        "print(frozen, threshold[0], freed, len(watched))\n"
    )
    out = _in_child(code)
    frozen, young, freed, watched = map(int, out)
    assert frozen > 1000  # the modules and objects loaded at start
    assert young == 20_000
    # All but those made since the last collection: at most GC_YOUNG objects, 2 a pair.
    assert watched == 120 and freed >= watched - 10
