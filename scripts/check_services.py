"""Say in one line when a service the command needs is not reachable, and how to start it."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

SERVICES = {
    "rabbitmq": (
        "GATEWAY_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/",
        "start it with `docker compose -f docker-compose.deps.yml up -d --wait` "
        "(or `rabbitmq-server -detached`)",
    ),
    "postgresql": (
        "TEST_POSTGRES_URL",
        "postgresql://postgres@127.0.0.1:5432/test",
        "start it with `docker compose -f docker-compose.deps.yml up -d --wait` "
        "(or `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)",
    ),
}


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 3
        ):
            return True
    except OSError:
        return False


def main(names: list[str]) -> int:
    failed = 0
    for name in names:
        var, default, how = SERVICES[name]
        url = os.environ.get(var, default)
        port = 5672 if name == "rabbitmq" else 5432
        if not reachable(url, port):
            host = urlsplit(url).hostname
            print(
                f"{name} is not reachable at {host}:{urlsplit(url).port or port}: {how}",
                file=sys.stderr,
            )
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["rabbitmq"]))
