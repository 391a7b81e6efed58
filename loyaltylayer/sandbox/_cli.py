"""The standalone server's command line (argparse: the sandbox needs only core dependencies).

``main`` takes ``argv`` and returns an exit code, so a click command can wrap it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .._config import is_loopback
from ._config import DEFAULT_CLIENTS, DEFAULT_PLANS, SandboxConfig, load_config_file
from ._openapi import spec_text
from ._server import Sandbox

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loyaltylayer.sandbox",
        description="Serve a local, stateful LoyaltyLayer API sandbox.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--rate-limit", type=int, default=100, help="requests per window")
    parser.add_argument("--rate-window", type=float, default=60.0, help="window, seconds")
    parser.add_argument("--window-kind", choices=("fixed", "sliding"), default="fixed")
    parser.add_argument("--rate-key", choices=("ip", "client_id", "off"), default="ip")
    parser.add_argument("--block", type=float, default=60.0, help="block after the limit, s")
    parser.add_argument(
        "--background-rate",
        type=int,
        default=0,
        help="requests per window another service sends from 127.0.0.1 (counted, not served)",
    )
    parser.add_argument(
        "--rate-headers", action="store_true", help="send RateLimit-Limit/-Remaining/-Reset"
    )
    parser.add_argument("--token-ttl", type=float, default=1800.0, help="access token life, s")
    parser.add_argument("--enrol-token-ttl", type=float, default=900.0, help="enrol token life, s")
    parser.add_argument("--idempotency-ttl", type=float, default=86400.0, help="key life, s")
    parser.add_argument("--encryption-key", type=Path, help="RSA private key PEM file")
    parser.add_argument("--seed", type=int, help="seed for ids and fault probabilities")
    parser.add_argument("--config", type=Path, help="JSON file with more clients and plans")
    parser.add_argument(
        "--print-openapi",
        nargs="?",
        const="json",
        choices=("json", "yaml"),
        metavar="json|yaml",
        help="write the API's OpenAPI document (as served at /openapi.json) and exit",
    )
    return parser


def _config(args: argparse.Namespace) -> SandboxConfig:
    clients = dict(DEFAULT_CLIENTS)
    plans = dict(DEFAULT_PLANS)
    if args.config is not None:
        more_clients, more_plans = load_config_file(args.config)
        clients.update(more_clients)
        plans.update(more_plans)
    pem = args.encryption_key.read_bytes() if args.encryption_key is not None else None
    return SandboxConfig(
        host=args.host,
        port=args.port,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        window_kind=args.window_kind,
        rate_key=args.rate_key,
        block=args.block,
        background_rate=args.background_rate,
        rate_headers=args.rate_headers,
        token_ttl=args.token_ttl,
        enrol_token_ttl=args.enrol_token_ttl,
        idempotency_ttl=args.idempotency_ttl,
        seed=args.seed,
        encryption_key_pem=pem,
        clients=clients,
        plans=plans,
    )


async def _serve(config: SandboxConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Sandbox(config) as sandbox:
        _announce(sandbox.base_url, config)
        await stop.wait()


def _shown_secret(client_id: str, secret: str) -> str:
    """The public demo client's secret; never one of ``--config`` (it may be a real one)."""
    return secret if DEFAULT_CLIENTS.get(client_id) == secret else "(from --config, not shown)"


def _announce(base_url: str, config: SandboxConfig) -> None:
    """Print where the sandbox listens and its demo credentials, in one write.

    A launcher often reads just the first line and closes the pipe; a server that then died of
    a broken pipe on its next print would vanish mid-run, so a reader that is gone is ignored.
    """
    lines = [f"LoyaltyLayer sandbox listening on {base_url}"]
    lines += [
        f"  client_id={client}  client_secret={_shown_secret(client, secret)}"
        for client, secret in config.clients.items()
    ]
    lines += [f"  plan {plan_id}: {plan.type}" for plan_id, plan in config.plans.items()]
    lines.append("Press Ctrl-C to stop.")
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        # Later writes (and the flush at exit) would fail again: send them nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _print(text: str) -> int:
    """Write ``text`` to stdout; a reader that closed the pipe early (``| head``) is no error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 after a clean stop, 2 for a bad option or config.

    With ``--print-openapi``, write the OpenAPI document instead and return 0.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.print_openapi is not None:
        return _print(spec_text(args.print_openapi))
    try:
        config = _config(args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(config.host):
        print(
            f"WARNING: binding the sandbox to {config.host}, not loopback: anyone who can reach "
            "it gets its demo credentials. Its control plane still answers loopback only.",
            file=sys.stderr,
            flush=True,
        )
    try:
        asyncio.run(_serve(config))
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0
