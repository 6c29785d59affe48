"""``headway slo rules CONFIG``: the config's SLOs as a Prometheus rule file on stdout.

Exit codes: 0 with the rules (YAML, ``groups:``); 1 with every config error (``path: message``)
when the config is invalid, or when it configures no SLO; 2 for a usage error. Where a rule's
SLI can only approximate the gateway's own evaluation, a note goes to stderr (and into the
rule's ``sli_caveat`` annotation). Validate the output with ``promtool check rules FILE``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from headway.config import ConfigError, load_config
from headway.observe import prometheus_rules, rule_caveats

__all__ = ["slo_main"]

USAGE = "usage: headway slo rules CONFIG [-o FILE]"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as literal blocks, as people write rule files."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def slo_main(argv: Sequence[str]) -> int:
    if list(argv[:1]) != ["rules"]:
        print(USAGE, file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog="headway slo rules",
        description="Print Prometheus recording and alerting rules (multiwindow, multi-burn-"
        "rate, Google SRE workbook ch. 5) for the SLOs of a Headway config.",
    )
    parser.add_argument("config", help="config file")
    parser.add_argument("-o", "--output", help="write to this file instead of stdout")
    args = parser.parse_args(argv[1:])
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for issue in exc.errors:
            print(issue, file=sys.stderr)
        count = len(exc.errors)
        print(f"{exc.source}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    if not config.slos:
        print(f"{args.config}: no SLOs configured (add a top-level 'slos:' list)", file=sys.stderr)
        return 1
    specs = [slo.to_spec() for slo in config.slos]
    if not config.observe.metrics:
        print(
            "note: observe.metrics is off in this config, so /metrics exposes nothing for "
            "these rules to read",
            file=sys.stderr,
        )
    for spec in specs:
        for caveat in rule_caveats(spec):
            print(f"note: SLO {spec.name}: {caveat}", file=sys.stderr)
    text = yaml.dump(
        prometheus_rules(specs), Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0
