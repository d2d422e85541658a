"""Loopback addresses for the local cloud: each Cloud SQL instance gets its own 127.x.y.z "private IP", so it
can listen on PostgreSQL's 5432 and the connector's 3307 like a real instance."""

from __future__ import annotations

import hashlib
import random
import socket

# Front proxies keep their port (so a service's uri) across restarts. Ports from the kernel's ephemeral range
# (what port 0 gives, and what every outgoing connection takes) may be in use by then; ports below it are
# handed out only by explicit binds, so a recorded one is free again after a restart unless something else
# asked for that very port.
STABLE_RANGES = ((20000, 30000), (10000, 20000))
DEFAULT_EPHEMERAL = (32768, 60999)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def allocate_private_ip(ports: tuple[int, ...] = (5432, 3307), rng: random.Random | None = None) -> str:
    """A loopback address on which every port in `ports` is free (127.20-127.250 range, never 127.0.0.x)."""
    rng = rng or random.Random()
    for _ in range(200):
        host = f"127.{rng.randint(20, 250)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        if all(port_free(host, p) for p in ports):
            return host
    raise RuntimeError("no free loopback address for a local Cloud SQL instance")


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL


def stable_range() -> tuple[int, int] | None:
    """A port range outside the ephemeral one, or None when the ephemeral range leaves none of ours free."""
    lo, hi = ephemeral_range()
    for a, b in STABLE_RANGES:
        if b <= lo or a > hi:
            return a, b
    return None


def stable_port(seed: str, avoid: set[int] = frozenset(), host: str = "127.0.0.1", tries: int = 200) -> int:
    """A free port outside the ephemeral range, the same one for the same seed while it stays free; 0 (any
    port) when there is no such range."""
    span = stable_range()
    if span is None:
        return 0
    a, b = span
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % (b - a)
    for i in range(min(tries, b - a)):
        port = a + (start + i) % (b - a)
        if port not in avoid and port_free(host, port):
            return port
    return 0
