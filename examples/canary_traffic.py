"""Steady traffic for the canary demo: chat completions to sim-large from many users at once.

Run it next to the demo gateway (`headway serve`) while a rollout runs; every few seconds it
prints how many answers came from each side (the ``x-headway-variant`` header) and how many
failed as the client saw them. Stop it with Ctrl-C.

    python examples/canary_traffic.py [--model sim-large] [--workers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time

import openai


async def main(model: str, workers: int, base_url: str, key: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)
    users = itertools.count()
    seen = {"stable": 0, "canary": 0, "failed": 0}

    async def worker() -> None:
        while True:
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=model,
                    messages=[{"role": "user", "content": "hello"}],
                    max_tokens=16,
                    # Canary assignment is sticky per user: many users spread over both sides.
                    user=f"user-{next(users) % 1000}",
                )
                raw.parse()
                seen[raw.headers.get("x-headway-variant", "stable")] += 1
            except openai.APIError:
                seen["failed"] += 1
                await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    start = time.monotonic()
    try:
        while True:
            await asyncio.sleep(5)
            print(
                f"{time.monotonic() - start:5.0f}s  stable {seen['stable']:5d}  "
                f"canary {seen['canary']:5d}  failed {seen['failed']:3d}",
                flush=True,
            )
    finally:
        for task in tasks:
            task.cancel()
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sim-large")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--key", default="sk-demo-pro")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.model, args.workers, args.base_url, args.key))
