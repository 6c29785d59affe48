"""``python -m headway.sim --port 9000``: run the simulator standalone until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from ._config import FaultConfig, SimConfig
from ._server import SimServer


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, SimConfig]:
    defaults = SimConfig()
    p = argparse.ArgumentParser(prog="headway sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--models", default=",".join(defaults.models))
    p.add_argument("--ttft", type=float, default=defaults.ttft_base, help="base TTFT, s")
    p.add_argument("--ttft-per-token", type=float, default=defaults.ttft_per_prompt_token)
    p.add_argument("--tokens-per-second", type=float, default=defaults.tokens_per_second)
    p.add_argument("--capacity", type=int, default=defaults.capacity)
    p.add_argument("--max-queue", type=int, default=None)
    p.add_argument("--output-tokens", type=int, default=defaults.default_output_tokens)
    p.add_argument("--embedding-dims", type=int, default=defaults.embedding_dims)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--error-status", type=int, default=500)
    args = p.parse_args(argv)
    config = SimConfig(
        models=tuple(m for m in args.models.split(",") if m),
        ttft_base=args.ttft,
        ttft_per_prompt_token=args.ttft_per_token,
        tokens_per_second=args.tokens_per_second,
        capacity=args.capacity,
        max_queue=args.max_queue,
        default_output_tokens=args.output_tokens,
        embedding_dims=args.embedding_dims,
        seed=args.seed,
        faults=FaultConfig(error_rate=args.error_rate, error_status=args.error_status),
    )
    return args, config


async def serve(host: str, port: int, config: SimConfig) -> None:
    server = SimServer(config)
    bound = await server.start(host, port)
    print(f"headway sim listening on http://{host}:{bound}/v1", flush=True)
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args, config = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
