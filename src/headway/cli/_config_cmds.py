"""``headway config apply|history|diff|rollback|show``: config versions from the command line.

Every command talks to the control-plane store named by ``--store URL`` (or ``$HEADWAY_STORE``;
default ``sqlite:///./headway-control.db``). Apply and rollback also write the last known good
file (``--last-good PATH`` or ``$HEADWAY_LAST_GOOD``; default ``./headway-last-good.yaml``;
an empty value turns it off).

Exit codes: 0 done (including "nothing changed"), 1 refused (invalid config with every error's
field path, unknown version, concurrent change, unreadable file), 2 usage, 3 the store could not
be used.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from headway.config import ConfigError
from headway.rollout import (
    DEFAULT_LAST_GOOD,
    ApplyResult,
    ConcurrentChange,
    ConfigVersions,
    LastKnownGood,
    VersionDiff,
    VersionNotFound,
    diff_texts,
)
from headway.store import (
    DEFAULT_STORE_URL,
    ConfigVersion,
    StoreError,
    open_control_store,
    parse_version_number,
)

__all__ = ["CONFIG_USAGE", "config_versions_main"]

CONFIG_USAGE = """usage: headway config COMMAND [ARGS]

commands:
  apply FILE -m MESSAGE   validate FILE and store it as the next config version
  history [-n N]          list config versions, newest first
  diff [FROM [TO]]        compare versions or files (FROM/TO: a version number or a file;
                          none: previous -> current; one: current -> it)
  rollback [VERSION]      re-apply VERSION (default: the one before the current) as a new version
  show [VERSION]          print a version's YAML (default: the current one)
  schema                  print the config's JSON Schema (for editors)

options for all but schema: --store URL (default $HEADWAY_STORE or sqlite:///./headway-control.db)
run 'headway config COMMAND --help' for a command's options
"""

_Command = Callable[[ConfigVersions, argparse.Namespace], Awaitable[int]]


def config_versions_main(command: str, argv: Sequence[str]) -> int:
    """Run ``headway config COMMAND`` (one of apply, history, diff, rollback, show)."""
    parser = _parser(command)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return exc.code if isinstance(exc.code, int) else 2
    try:  # files are read before the event loop starts (no blocking I/O inside it)
        paths = [args.file] if command == "apply" else getattr(args, "operands", [])
        files = [p for p in paths if not (p.isascii() and p.isdigit())]  # digits: a version
        args.files = {p: Path(p).read_text("utf-8") for p in files}
    except (OSError, UnicodeDecodeError) as exc:
        print(f"headway config {command}: cannot read {exc}", file=sys.stderr)
        return 1
    try:
        store = open_control_store(args.store)
    except ValueError as exc:
        print(f"headway config {command}: {exc}", file=sys.stderr)
        return 2
    last_good = LastKnownGood(args.last_good) if args.last_good else None
    versions = ConfigVersions(store, last_good=last_good)
    run: _Command = _COMMANDS[command]

    async def main() -> int:
        try:
            return await run(versions, args)
        finally:
            await store.aclose()

    try:
        return asyncio.run(main())
    except StoreError as exc:
        print(f"headway config {command}: store error: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        for issue in exc.errors:
            print(issue)
        count = len(exc.errors)
        print(
            f"{exc.source}: rejected, {count} error{'s' if count != 1 else ''}; nothing changed",
            file=sys.stderr,
        )
        return 1
    except (VersionNotFound, ConcurrentChange) as exc:
        print(f"headway config {command}: {exc}", file=sys.stderr)
        return 1


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"headway config {command}")
    parser.add_argument(
        "--store",
        default=os.environ.get("HEADWAY_STORE") or DEFAULT_STORE_URL,
        help="control-plane store URL: sqlite:///PATH or postgresql://... "
        "(default: $HEADWAY_STORE or %(default)s)",
    )
    parser.add_argument(
        "--last-good",
        default=os.environ.get("HEADWAY_LAST_GOOD", DEFAULT_LAST_GOOD),
        help="file that keeps the latest applied config for gateways to start from when the "
        "store is unreachable ('' to skip; default: $HEADWAY_LAST_GOOD or %(default)s)",
    )
    if command in ("apply", "rollback"):
        parser.add_argument(
            "--author", default=_user(), help="who is making the change (default: $USER)"
        )
    if command == "apply":
        parser.description = "Validate a config file and store it as the next version."
        parser.add_argument("file", help="the config file to apply")
        parser.add_argument("-m", "--message", required=True, help="why (kept in history)")
    elif command == "rollback":
        parser.description = "Apply an earlier version's config again, as a new version."
        parser.add_argument("version", nargs="?", type=_version_number, help="default: previous")
        parser.add_argument("-m", "--message", help="why (added to 'rollback to N')")
    elif command == "history":
        parser.description = "List config versions, newest first."
        parser.add_argument("-n", "--limit", type=_version_number, help="show at most N")
    elif command == "diff":
        parser.description = (
            "Compare two configs, each a version number or a file. No operand: the previous "
            "version -> the current one; one operand: the current version -> it."
        )
        parser.add_argument("operands", nargs="*", metavar="FROM_TO")
        parser.add_argument("--summary", action="store_true", help="settings only, no text diff")
    elif command == "show":
        parser.description = "Print a version's YAML text exactly as applied."
        parser.add_argument("version", nargs="?", type=_version_number, help="default: current")
    return parser


def _user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def _version_number(text: str) -> int:
    number = parse_version_number(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return number


async def _apply(versions: ConfigVersions, args: argparse.Namespace) -> int:
    text = args.files[args.file]
    result = await versions.apply(text, author=args.author, message=args.message, source=args.file)
    number = result.version.number
    return _report(
        result,
        f"no change: {args.file} is identical to the current version {number}",
        f"applied version {number}: {_count(result.version)}",
    )


async def _rollback(versions: ConfigVersions, args: argparse.Namespace) -> int:
    result = await versions.rollback(args.version, author=args.author, message=args.message)
    version = result.version
    return _report(
        result,
        f"no change: version {version.number} already has that config",
        f"applied version {version.number} ({version.message}): {_count(version)}",
    )


def _report(result: ApplyResult, unchanged: str, applied: str) -> int:
    """What an apply or a rollback did: one headline, the new version's changes, warnings."""
    if not result.changed:
        print(unchanged)
    else:
        print(applied)
        for line in result.version.diff:
            print(f"  {line}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


async def _history(versions: ConfigVersions, args: argparse.Namespace) -> int:
    history = await versions.history(args.limit)
    if not history:
        print(f"no config versions in {versions.store.url}")
        return 0
    print(format_history(history))
    return 0


def format_history(history: Sequence[ConfigVersion]) -> str:
    """A table of ``history`` (newest first); the first row is marked current."""
    header = ("", "VERSION", "CREATED (UTC)", "AUTHOR", "CHANGES", "SHA256", "MESSAGE")
    rows = [header]
    for index, version in enumerate(history):
        rows.append(
            (
                "*" if index == 0 else "",
                str(version.number),
                version.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                version.author,
                str(len(version.diff)) if version.number > 1 else "-",
                version.sha256[:12],
                version.message,
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[col]) if col in (1, 4) else cell.ljust(widths[col])
            for col, cell in enumerate(row[:-1])
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


async def _diff(versions: ConfigVersions, args: argparse.Namespace) -> int:
    operands: list[str] = args.operands
    if len(operands) > 2:
        print("headway config diff: at most two operands (FROM TO)", file=sys.stderr)
        return 2
    current = await versions.current()
    if len(operands) < 2:
        if current is None:
            print("headway config diff: no config versions yet", file=sys.stderr)
            return 1
        if not operands:
            if current.number < 2:
                print("only one version exists: nothing to compare")
                return 0
            operands = [str(current.number - 1), str(current.number)]
        else:
            operands = [str(current.number), operands[0]]
    (old_label, old_text), (new_label, new_text) = [
        await _resolve(versions, operand, args.files) for operand in operands
    ]
    _print_diff(diff_texts(old_text, new_text, old_label, new_label), summary=args.summary)
    return 0


async def _resolve(
    versions: ConfigVersions, operand: str, files: dict[str, str]
) -> tuple[str, str]:
    """A version number or a file (read already) -> (label, YAML text)."""
    if operand.isascii() and operand.isdigit():
        number = parse_version_number(operand)
        if number is None:
            raise VersionNotFound(f"no config version {operand}: versions are numbered from 1")
        return f"version {operand}", (await versions.get(number)).yaml_text
    return operand, files[operand]


def _print_diff(diff: VersionDiff, *, summary: bool) -> None:
    if not diff.text:
        print(f"no differences between {diff.old_label} and {diff.new_label}")
        return
    print(f"settings changed from {diff.old_label} to {diff.new_label}:")
    for line in diff.changes or ("(none: the texts differ only in comments or layout)",):
        print(f"  {line}")
    if not summary:
        print()
        for line in diff.text:
            print(line)


async def _show(versions: ConfigVersions, args: argparse.Namespace) -> int:
    if args.version is None:
        version = await versions.current()
        if version is None:
            print("headway config show: no config versions yet", file=sys.stderr)
            return 1
    else:
        version = await versions.get(args.version)
    sys.stdout.write(version.yaml_text)
    return 0


def _count(version: ConfigVersion) -> str:
    if version.number == 1:
        return "the first version"
    if not version.diff:
        return "no setting changed (comments or layout only)"
    n = len(version.diff)
    return f"{n} setting{'s' if n != 1 else ''} changed"


_COMMANDS: dict[str, _Command] = {
    "apply": _apply,
    "rollback": _rollback,
    "history": _history,
    "diff": _diff,
    "show": _show,
}
