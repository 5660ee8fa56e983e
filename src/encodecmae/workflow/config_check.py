"""The workflow configuration checked against its JSON schema, with errors in a few lines.

``snakemake.utils.validate`` reports a bad key with a dump of the whole schema (about a hundred
lines) and the key's path near the end. ``check_config`` validates the same way (jsonschema,
the schema's draft; defaults filled in place as ``validate(..., set_default=True)`` does, which
the rule files rely on: ``config["encodec"]["weights"]``, ``config["hear"]["layer"]``, ...) and
raises ``ConfigError`` with one short entry per problem: the key's path
(``experiments[2].stepz``), what is wrong (unknown key, wrong type, not one of the allowed
values, missing, out of range) and what is allowed (the allowed keys at that level, or the
schema's description of the key).

Imports no torch: the Snakefile calls it while loading.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, replace
from pathlib import Path

import jsonschema
import yaml
from jsonschema import validators

MAX_PROBLEMS = 5  # listed in the message; the rest are counted
_VALUE_CHARS = 40

_JSON_TYPES = [(bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
               (dict, "object"), (type(None), "null")]


class ConfigError(ValueError):
    """An invalid configuration; the message lists each problem with its key path."""


@dataclass(frozen=True)
class Problem:
    path: str  # experiments[2].stepz
    what: str  # unknown key, wrong type: ...
    allowed: str = ""  # the allowed keys, or the key's description
    suggestion: str = ""  # unknown key: the path of the allowed key it resembles
    missing: bool = False  # a required key that is absent

    def lines(self, fixed_by_suggestion: bool = False) -> list[str]:
        what = self.what
        if fixed_by_suggestion:  # the misspelling of a required key: one problem, not two
            what = what.replace("?)", "? it is required)")
        return [f"  {self.path}: {what}"] + ([f"      {self.allowed}"] if self.allowed else [])


def load_schema(path: str | Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _with_defaults(validator_class):
    """The validator class, extended to fill in each property's ``default`` before checking it
    (jsonschema's FAQ recipe, as snakemake.utils.validate uses; defaults are copied, so filled-in
    containers are never shared with the schema or with each other)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


def check_config(config: dict, schema: str | Path | dict, source: str | None = None) -> dict:
    """Validate ``config`` against ``schema`` (a dict or a YAML/JSON file), filling in the
    schema's defaults in place. Returns ``config``; raises ConfigError naming every problem
    (``source``, e.g. the config file, goes into the first line)."""
    schema_dict = load_schema(schema) if not isinstance(schema, dict) else schema
    cls = validators.validator_for(schema_dict, default=jsonschema.Draft202012Validator)
    validator = _with_defaults(cls)(schema_dict)
    errors = list(validator.iter_errors(config))
    if errors:
        raise ConfigError(format_errors(errors, schema_dict, source))
    return config


# --- messages --------------------------------------------------------------------------------


def format_errors(errors, schema: dict, source: str | None = None) -> str:
    problems: list[Problem] = []
    for error in errors:
        for p in describe(error, schema):
            if p not in problems:
                problems.append(p)
    # a misspelled required key is reported once, as the unknown key that resembles it
    missing = {p.path for p in problems if p.missing}
    suggested = {p.suggestion for p in problems if p.suggestion in missing}
    problems = [p for p in problems if not (p.missing and p.path in suggested)]
    where = f" in {source}" if source else ""
    noun = "problem" if len(problems) == 1 else "problems"
    lines = [f"invalid configuration{where} ({len(problems)} {noun}):"]
    for p in problems[:MAX_PROBLEMS]:
        lines += p.lines(fixed_by_suggestion=p.suggestion in suggested)
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_PROBLEMS} more")
    return "\n".join(lines)


def describe(error, schema: dict) -> list[Problem]:
    """The problems one jsonschema error stands for (several for several unknown keys)."""
    path = list(error.absolute_path)
    if error.validator in ("oneOf", "anyOf") and isinstance(error.validator_value, list):
        return _no_alternative_fits(error, path, schema)

    kind, value = error.validator, error.validator_value

    if kind == "additionalProperties" and value is False and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        extra = [k for k in error.instance if k not in known and not any(re.search(p, k) for p in patterns)]
        return [_unknown_key(path + [k], k, known) for k in extra]

    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        # a key outside the allowed names (experiments[i].train): the error's path is the object's
        allowed = value if kind == "enum" else []
        return [_unknown_key(path + [error.instance], error.instance, list(allowed))]

    desc = description_at(schema, error.absolute_schema_path)
    where = format_path(path)
    if kind == "required":
        out = []
        for k in value:
            if isinstance(error.instance, dict) and k not in error.instance:
                sub = error.schema.get("properties", {}).get(k) or _enclosing_property(schema, error, k)
                out.append(Problem(format_path(path + [k]), "missing (required)",
                                   " ".join(str(sub.get("description", "")).split()), missing=True))
        return out
    if kind == "type":
        expected = " or ".join(value) if isinstance(value, list) else value
        what = f"wrong type: {_value(error.instance)} is {_a(json_type(error.instance))}, expected {_a(expected)}"
    elif kind == "enum":
        close = difflib.get_close_matches(str(error.instance), [str(v) for v in value], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = f"{_value(error.instance)} is not one of {', '.join(map(str, value))}{hint}"
    elif kind == "const":
        what = f"{_value(error.instance)} is not {value!r}"
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        what = f"{_value(error.instance)} is out of range (must be {bound} {value})"
    elif kind in ("minItems", "minProperties"):
        what = f"needs at least {value} {'entry' if value == 1 else 'entries'}"
    elif kind in ("maxItems", "maxProperties"):
        what = f"has more than {value} {'entry' if value == 1 else 'entries'}"
    elif kind == "pattern":
        what = f"{_value(error.instance)} does not match {value}"
    else:
        what = _shorten(error.message, 120)
    return [Problem(where, what, desc)]


def _enclosing_property(schema: dict, error, key: str) -> dict:
    """The schema of property ``key`` in the nearest object schema on the error's schema path
    (a ``required`` under ``if``/``then`` names keys its own subschema does not describe)."""
    found = {}
    for node in _nodes_on(schema, error.absolute_schema_path):
        if isinstance(node, dict) and isinstance(node.get("properties"), dict) and key in node["properties"]:
            found = node["properties"][key]
    return found


def _no_alternative_fits(error, path: list, schema: dict) -> list[Problem]:
    """A oneOf/anyOf failure: the complaints of the first alternative of the value's type (a
    string value is judged against the string alternative, a mapping against the mapping one),
    or a type error when no alternative takes that type. Every problem carries the description
    of the key when the alternative has none of its own."""
    desc = description_at(schema, error.absolute_schema_path)
    kind = json_type(error.instance)
    types: list[str] = []
    for i, alt in enumerate(error.validator_value):
        alt_types = alt.get("type") if isinstance(alt, dict) else None
        alt_types = [alt_types] if isinstance(alt_types, str) else list(alt_types or [])
        types += [t for t in alt_types if t not in types]
        if alt_types and not (kind in alt_types or (kind == "integer" and "number" in alt_types)):
            continue
        inner = [e for e in error.context if e.relative_schema_path and e.relative_schema_path[0] == i]
        if inner:
            return [replace(p, allowed=p.allowed or desc) for e in inner for p in describe(e, schema)]
    if types:
        what = f"wrong type: {_value(error.instance)} is {_a(kind)}, expected {_a(' or '.join(types))}"
    else:
        what = f"{_value(error.instance)} matches none of the allowed forms"
    return [Problem(format_path(path), what, desc)]


def _unknown_key(path: list, key: str, allowed: list[str]) -> Problem:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    level = format_path(path[:-1])
    return Problem(format_path(path), f"unknown key{hint}",
                   f"allowed keys in {level}: {', '.join(allowed)}" if allowed else f"{level} takes no keys",
                   suggestion=format_path(path[:-1] + [close[0]]) if close else "")


def _nodes_on(schema: dict, schema_path):
    """The schema nodes along ``schema_path``, the root first, as far as the path leads."""
    node = schema
    yield node
    for part in schema_path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return
        yield node


def description_at(schema: dict, schema_path) -> str:
    """The description of the deepest schema node on ``schema_path`` below the root that has one."""
    found = ""
    for node in list(_nodes_on(schema, schema_path))[1:]:
        if isinstance(node, dict) and isinstance(node.get("description"), str):
            found = node["description"]
    return " ".join(found.split())


def format_path(path) -> str:
    """``['experiments', 2, 'stepz']`` -> ``experiments[2].stepz`` (``top level`` for the root)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r}]"
    return out or "top level"


def json_type(value) -> str:
    for t, name in _JSON_TYPES:
        if isinstance(value, t):
            return name
    return type(value).__name__


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _value(v) -> str:
    return _shorten(repr(v), _VALUE_CHARS)


def _shorten(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."
