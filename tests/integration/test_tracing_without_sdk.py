"""Without the optional OpenTelemetry SDK (the ``otel`` extra) Headway imports, serves requests,
and says exactly what is missing when a config turns tracing on.

The check runs in a fresh interpreter in which every ``opentelemetry`` import fails, as on a
machine where the extra was never installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.abc, sys

    class NoOtel(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoOtel())

    import openai
    import headway.cli
    from headway.config import ConfigError, load_config, parse_config
    from headway.gateway._app import Gateway
    from headway.observe import GatewayTracer, TracingUnavailable

    try:
        parse_config("version: 1\\nobserve: {tracing: {enabled: true}}")
    except ConfigError as error:
        print("config:", error.errors[0].path, "|", error.errors[0].message)
    try:
        GatewayTracer(endpoint="http://127.0.0.1:1/v1/traces")
    except TracingUnavailable as error:
        print("tracer:", error)

    async def serve() -> str:
        gateway = Gateway(load_config(None))  # the demo: tracing off
        await gateway.start(api_port=0, admin_port=0)
        try:
            client = openai.AsyncOpenAI(
                base_url=f"http://127.0.0.1:{gateway.api_port}/v1", api_key="sk-demo-pro"
            )
            reply = await client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            return reply.choices[0].finish_reason
        finally:
            await gateway.stop(1.0)

    print("served:", asyncio.run(serve()))
    print("otel modules:", sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    """
)


def test_headway_runs_without_the_sdk_and_names_observe_tracing_when_it_is_needed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    config, tracer, served, modules = lines
    assert config.startswith("config: observe.tracing | tracing is enabled but opentelemetry")
    assert "pip install 'headway[otel]'" in config
    assert tracer.startswith("tracer: observe.tracing is enabled but OpenTelemetry cannot be")
    assert "pip install 'headway[otel]'" in tracer
    assert served == "served: length"
    assert modules == "otel modules: []"
