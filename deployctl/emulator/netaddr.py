"""Loopback addresses for the local cloud: each Cloud SQL instance gets its own 127.x.y.z "private IP", so it
can listen on PostgreSQL's 5432 and the connector's 3307 like a real instance."""

from __future__ import annotations

import random
import socket


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
