"""``python -m gateway``: the same as the ``statsd-gateway`` command."""

from gateway.cli import run

run()
