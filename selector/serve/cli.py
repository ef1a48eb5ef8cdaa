"""`tokenrelay serve` entry point: read the config, load the models, then listen.

The models load before the port opens, so a client that sees /health answer can send requests.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from ..cli import parse_config, run_command
from .config import ServeConfig

__all__ = ["main", "serve_config"]

PROG = "tokenrelay serve"


def serve_config(path: str) -> ServeConfig:
    """Build the config of a YAML file without running it (tests/test_configs.py)."""
    return parse_config(ServeConfig, ["--config", str(path)], PROG)


def _missing_extra(err: ImportError) -> ValueError:
    return ValueError(
        f'{err.name} is not installed: `pip install "tokenrelay[serve]"` adds what serving needs'
    )


def main(argv: Sequence[str]) -> int:
    def body() -> None:
        config = parse_config(ServeConfig, argv, PROG)
        try:
            import uvicorn

            from .app import create_app
            from .worker import ModelWorker
        except ImportError as err:
            raise _missing_extra(err) from err
        sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.host, config.port))
        except OSError as err:
            raise ValueError(f"cannot listen on {config.host}:{config.port}: {err.strerror}") from err
        worker = ModelWorker(config)
        worker.load()
        host, port = sock.getsockname()[:2]
        print(f"{PROG}: model {config.model_name!r} at http://{host}:{port}/v1", flush=True)
        server = uvicorn.Server(uvicorn.Config(create_app(config, worker), log_level=config.log_level))
        server.run(sockets=[sock])

    return run_command(body, PROG)
