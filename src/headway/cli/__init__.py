"""The ``headway`` command: one entry point, one sub-command per job.

Sub-commands import their module only when chosen, so ``headway check`` stays quick and does not
pull in the data path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """usage: headway COMMAND [ARGS]

commands:
  serve [CONFIG]        run the gateway (no CONFIG: the embedded demo, examples/headway.yaml)
  serve --store URL     run the gateway from config versions in a control store
  check CONFIG          validate a config file; print every error with its field path
  config apply FILE -m MESSAGE
                        validate FILE and store it as the next config version
  config history|diff|rollback|show
                        config versions (see 'headway config --help')
  config schema         print the config's JSON Schema (for editors)
  sim [OPTIONS]         run a simulated OpenAI-compatible model server
  top [--url URL]       live gateway numbers in the terminal (from the admin API)
  slo rules CONFIG      print Prometheus alerting rules for the config's SLOs
  rollout start MODEL [--spec FILE] | status [MODEL] | pause|resume|promote|abort MODEL
                        canary rollouts on a running gateway (through its admin API)

run 'headway COMMAND --help' for a command's options
"""


def _serve(argv: Sequence[str]) -> int:
    from headway.gateway._serve import serve_main

    return serve_main(argv)


def _check(argv: Sequence[str]) -> int:
    from headway.config import check_main

    return check_main(argv)


def _config(argv: Sequence[str]) -> int:
    if list(argv[:1]) == ["schema"]:
        from headway.config import schema_main

        return schema_main(argv[1:])
    from headway.cli._config_cmds import CONFIG_USAGE, config_versions_main

    if argv and argv[0] in ("apply", "history", "diff", "rollback", "show"):
        return config_versions_main(argv[0], argv[1:])
    if list(argv[:1]) in (["-h"], ["--help"]):
        print(CONFIG_USAGE, end="")
        return 0
    print(CONFIG_USAGE, file=sys.stderr, end="")
    return 2


def _slo(argv: Sequence[str]) -> int:
    from headway.cli._slo import slo_main

    return slo_main(argv)


def _top(argv: Sequence[str]) -> int:
    from ._top import top_main

    return top_main(argv)


def _rollout(argv: Sequence[str]) -> int:
    from ._rollout import rollout_main

    return rollout_main(argv)


def _sim(argv: Sequence[str]) -> int:
    from headway.sim.__main__ import main as sim_main

    return sim_main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "serve": _serve,
    "check": _check,
    "config": _config,
    "sim": _sim,
    "top": _top,
    "slo": _slo,
    "rollout": _rollout,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"headway: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    return command(args[1:])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
