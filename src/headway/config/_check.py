"""Bodies of ``headway check [CONFIG]`` and ``headway config schema`` (the CLI wires them in).

``check`` exits 0 and prints a one-line summary for a valid config; otherwise it prints every
issue as ``path: message`` (with the line when known) and exits 1. It never starts anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ._errors import ConfigError
from ._loader import load_config
from ._schema import config_json_schema

__all__ = ["check_main", "schema_main"]


def check_main(argv: Sequence[str] | None = None) -> int:
    """Validate a config file (the embedded default when none is given); 0 if valid, else 1."""
    parser = argparse.ArgumentParser(
        prog="headway check", description="Validate a Headway config file and list every error."
    )
    parser.add_argument("config", nargs="?", help="config file (default: the embedded default)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for issue in exc.errors:
            print(issue)
        count = len(exc.errors)
        print(f"{exc.source}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    print(
        f"ok: {len(config.pools)} pools, {len(config.models)} models, {len(config.tenants)} tenants"
    )
    return 0


def schema_main(argv: Sequence[str] | None = None) -> int:
    """Print the config's JSON Schema (or write it to ``--output``)."""
    parser = argparse.ArgumentParser(
        prog="headway config schema", description="Print the JSON Schema of Headway's config."
    )
    parser.add_argument("-o", "--output", help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    text = json.dumps(config_json_schema(), indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0
