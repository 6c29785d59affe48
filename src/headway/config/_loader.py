"""From YAML text to a validated ``GatewayConfig``, or a ``ConfigError`` listing every mistake.

Pipeline, each step adding to one list of issues:

1. YAML (safe loader) -> plain data, keeping each node's line/column; syntax errors stop here,
   repeated mapping keys are issues.
2. ``version``: required; a newer one stops here; an older one is migrated step by step by
   ``MIGRATIONS`` (after step 3, so secrets are expanded at the paths the operator wrote).
3. ``${ENV}`` expansion in every string (missing variables are issues).
4. Type validation (pydantic: every field error with its path) and cross-section checks
   (references, duplicates, cycles) on the same data, so both kinds are reported together.

Guarantee: the result is all-or-nothing. A config with N independent mistakes raises one
``ConfigError`` with N issues, each path pointing at the field (and its line when known).
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ._crossref import check_references
from ._errors import ConfigError, ConfigIssue, format_path
from ._root import CURRENT_VERSION, SKIP_REFERENCES, GatewayConfig
from ._secrets import expand_env

__all__ = ["DEFAULT_CONFIG_PATH", "MIGRATIONS", "load_config", "parse_config"]

_DEFAULT_RESOURCE = files("headway.config").joinpath("default.yaml")
#: The embedded default config (a copy of examples/headway.yaml shipped in the package).
DEFAULT_CONFIG_PATH = Path(str(_DEFAULT_RESOURCE))

#: Format migrations: ``MIGRATIONS[n]`` turns a version-``n`` config (plain data) into a
#: version ``n + 1`` one; the loader then sets ``version`` itself. Raise ``ValueError`` for a
#: config that cannot be migrated. Empty while 1 is the only version.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Loc = tuple[str | int, ...]
_Marks = dict[_Loc, tuple[int, int]]


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A safe loader that reports a key written twice in one mapping instead of keeping the
    last silently."""

    duplicates: list[ConfigIssue]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    mark = key_node.start_mark
                    self.duplicates.append(
                        ConfigIssue(
                            "",
                            f"line {mark.line + 1}, column {mark.column + 1}: "
                            f"key '{key_node.value}' appears twice in the same mapping",
                            mark.line + 1,
                            mark.column + 1,
                        )
                    )
                seen.add(key_node.value)
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


def load_config(path: str | os.PathLike[str] | None = None) -> GatewayConfig:
    """Load and validate a config file; ``None`` loads the embedded default."""
    if path is None:
        return parse_config(_DEFAULT_RESOURCE.read_text("utf-8"), source=str(DEFAULT_CONFIG_PATH))
    source = os.fspath(path)
    try:
        text = Path(source).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [ConfigIssue("", f"cannot read {source}: {reason}")], source=source
        ) from None
    return parse_config(text, source=source)


def parse_config(
    text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate config ``text``; ``env`` (default ``os.environ``) resolves ``${NAME}``."""
    issues: list[ConfigIssue] = []
    data, marks = _parse_yaml(text, source)
    if data is None:
        raise ConfigError(
            [ConfigIssue("", "the config is empty; start it with 'version: 1'")], source=source
        )
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(
            [ConfigIssue("", f"expected a mapping at the top level, got a {kind}")], source=source
        )
    version = _check_version(data, source)
    env_issues: list[ConfigIssue] = []
    data = expand_env(data, os.environ if env is None else env, env_issues)
    if version < CURRENT_VERSION:
        data = _migrate(data, version, source)
        marks = {}  # paths may have moved: line numbers would mislead
    issues.extend(env_issues)
    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate(data, context={SKIP_REFERENCES: True})
    except ValidationError as exc:
        issues.extend(_from_validation(exc))
    issues.extend(check_references(data))
    issues = _without_echoes(issues, env_issues)
    if issues or config is None:
        located = [_locate(issue, marks) for issue in issues]
        located.sort(key=lambda issue: issue.line or 0)  # file order; stable within a line
        raise ConfigError(located, source=source)
    return config


def _parse_yaml(text: str, source: str) -> tuple[Any, _Marks]:
    loader = _Loader(text)
    loader.duplicates = []
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            raise ConfigError(
                [ConfigIssue("", f"YAML syntax error: {problem}")], source=source
            ) from None
        line, column = mark.line + 1, mark.column + 1
        issue = ConfigIssue(
            "", f"YAML syntax error at line {line}, column {column}: {problem}", line, column
        )
        raise ConfigError([issue], source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", f"YAML error: {exc}")], source=source) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        loader.duplicates.sort(key=lambda issue: (issue.line or 0, issue.column or 0))
        raise ConfigError(loader.duplicates, source=source)
    marks: _Marks = {}
    if node is not None:
        _collect_marks(node, (), marks, set())
    return data, marks


def _collect_marks(node: yaml.Node, loc: _Loc, marks: _Marks, seen: set[int]) -> None:
    if id(node) in seen:  # an alias: its first occurrence is marked already
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.tag == "tag:yaml.org,2002:merge":
                _collect_marks(value_node, loc, marks, seen)
                continue
            child = (*loc, key_node.value)
            marks.setdefault(child, (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
            _collect_marks(value_node, child, marks, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*loc, index)
            marks.setdefault(child, (item.start_mark.line + 1, item.start_mark.column + 1))
            _collect_marks(item, child, marks, seen)


def _check_version(data: dict[str, Any], source: str) -> int:
    known = f"this Headway knows {CURRENT_VERSION}"
    version = data.get("version")
    if version is None:
        message = f"required: start the file with 'version: {CURRENT_VERSION}' ({known})"
    elif isinstance(version, bool) or not isinstance(version, int):
        message = f"must be an integer ({known}), got {version!r}"
    elif version > CURRENT_VERSION or (version < CURRENT_VERSION and version not in MIGRATIONS):
        message = f"unsupported config version {version} ({known})"
    else:
        return version
    raise ConfigError([ConfigIssue("version", message)], source=source)


def _migrate(data: dict[str, Any], version: int, source: str) -> dict[str, Any]:
    while version < CURRENT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            message = f"unsupported config version {version} (this Headway knows {CURRENT_VERSION})"
            raise ConfigError([ConfigIssue("version", message)], source=source)
        try:
            data = step(dict(data))
        except ValueError as exc:
            message = f"cannot migrate from version {version} to {version + 1}: {exc}"
            raise ConfigError([ConfigIssue("version", message)], source=source) from None
        version += 1
        data["version"] = version
    return data


# pydantic's words for YAML readers: a tuple is a list, a model is a mapping.
_PLAIN_MESSAGES = {
    "missing": "required field is missing",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
}
_NO_INPUT_ECHO = {"missing", "extra_forbidden", "value_error", "assertion_error", "too_short"}


def _from_validation(exc: ValidationError) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    for error in errors:
        loc: _Loc = tuple(error["loc"])
        kind = error["type"]
        if kind == "too_short" and any(_inside_item(other, loc) for other in locs):
            continue  # a list emptied by its own bad items: the item errors say it all
        if kind == "extra_forbidden":
            message = _unknown_field(loc)
        elif kind == "too_short":
            least = error.get("ctx", {}).get("min_length", 1)
            message = "must not be empty" if least == 1 else f"needs at least {least} items"
        elif kind in _PLAIN_MESSAGES:
            message = _PLAIN_MESSAGES[kind]
        else:
            message = (
                error["msg"].removeprefix("Value error, ").replace("Tuple should", "List should")
            )
        secret = any(part in ("keys", "api_key") for part in loc)
        value = error.get("input")
        if (
            kind not in _NO_INPUT_ECHO
            and kind not in _PLAIN_MESSAGES
            and not secret
            and isinstance(value, str | int | float | bool)
            and len(repr(value)) <= 80
        ):
            message = f"{message} (got {value!r})"
        issues.append(ConfigIssue(format_path(loc), message))
    return issues


def _inside_item(loc: _Loc, of: _Loc) -> bool:
    """Whether ``loc`` is within an item of the list at ``of``."""
    return len(loc) > len(of) and loc[: len(of)] == of and isinstance(loc[len(of)], int)


def _unknown_field(loc: _Loc) -> str:
    name = str(loc[-1]) if loc else ""
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown field '{name}'"
    known = list(model.model_fields)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown field '{name}' (did you mean '{close[0]}'?)"
    return f"unknown field '{name}' (known: {', '.join(known)})"


def _model_at(loc: _Loc) -> type[BaseModel] | None:
    current: Any = GatewayConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _element_type(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _element_type(annotation: Any) -> Any:
    """``tuple[X, ...]``, ``X | None``, ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        args = get_args(annotation)
        if origin in (Annotated, tuple, list) and args:
            annotation = args[0]
        elif origin in (Union, types.UnionType):
            annotation = next((a for a in args if a is not type(None)), None)
        else:
            return annotation


def _without_echoes(issues: list[ConfigIssue], env_issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """Drop follow-on errors at a field whose ``${VAR}`` was missing: one cause, one issue."""
    missing = {issue.path for issue in env_issues}
    if not missing:
        return issues
    return [
        issue
        for issue in issues
        if issue in env_issues
        or not any(issue.path == p or issue.path.startswith((p + ".", p + "[")) for p in missing)
    ]


def _locate(issue: ConfigIssue, marks: _Marks) -> ConfigIssue:
    if issue.line is not None or not issue.path or not marks:
        return issue
    loc = _parse_path(issue.path)
    while loc:
        found = marks.get(loc)
        if found is not None:
            return ConfigIssue(issue.path, issue.message, found[0], found[1])
        loc = loc[:-1]
    return issue


def _parse_path(path: str) -> _Loc:
    """The inverse of ``format_path`` (``a[0].b`` -> ``("a", 0, "b")``)."""
    loc: list[str | int] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if name:
            loc.append(name)
        if rest:
            for index in rest.rstrip("]").split("]["):
                loc.append(int(index) if index.isdigit() else index)
    return tuple(loc)
