"""Video templates as plain data: strict file validation, user variables, safe prompt rendering."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
VARIABLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# A fal endpoint id: owner/app[/sub/path], each segment starting with a letter or digit.
MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)+")
DURATION_KEY_RE = re.compile(r"[1-9][0-9]{0,3}")
# One pass over a template: escaped braces, then `{identifier}` placeholders, nothing else.
TOKEN_RE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")

MAX_VALUE_LENGTH = 500  # hard cap on any variable value, whatever the template says
MAX_NAME_LENGTH = 200
MAX_MODEL_LENGTH = 200
MAX_PROMPT_LENGTH = 4000
MAX_CREDITS = 1_000_000_000
MAX_REPORTED_UNKNOWN = 10

TEMPLATE_KEYS = frozenset(
    {"slug", "name", "model", "prompt", "negative_prompt", "variables", "durations", "active"})
VARIABLE_KEYS = frozenset({"name", "required", "default", "choices", "max_length"})
PROMPT_WHITESPACE = frozenset("\n\r\t")


@dataclass(frozen=True)
class TemplateVariable:
    """One user-fillable `{name}` of a template and the rules its value must meet."""

    name: str
    required: bool = False
    default: str | None = None
    choices: tuple[str, ...] | None = None
    max_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `{name, required, default, choices, max_length}` shape of docs/api.md §5,
        JSON-able."""
        return {"name": self.name, "required": self.required, "default": self.default,
                "choices": list(self.choices) if self.choices is not None else None,
                "max_length": self.max_length}


@dataclass(frozen=True)
class VideoTemplate:
    """A validated template; build it with `parse_templates` or `from_record`, not by hand."""

    slug: str
    name: str
    model: str
    prompt: str
    negative_prompt: str | None
    variables: tuple[TemplateVariable, ...]
    durations: dict[str, int] = field(hash=False)  # duration in seconds ("5") -> credit cost
    active: bool = True

    def to_record(self) -> dict[str, Any]:
        """The stored form, with the record's field names (docs/api.md §1);
        `negative_prompt` is left out when unset."""
        record: dict[str, Any] = {"slug": self.slug, "name": self.name, "model": self.model,
                                  "prompt": self.prompt}
        if self.negative_prompt is not None:
            record["negative_prompt"] = self.negative_prompt
        record["variables"] = [v.to_dict() for v in self.variables]
        record["durations"] = dict(self.durations)
        record["active"] = self.active
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> VideoTemplate:
        """Rebuild from a stored record, re-validating it; store keys like `id` are ignored."""
        return _parse_entry(record, _Where("<record>", None), strict=False)

    def public_dict(self) -> dict[str, Any]:
        """One item of `GET /api/templates`: what a user needs to pick and fill a template."""
        return {"slug": self.slug, "name": self.name, "durations": dict(self.durations),
                "variables": [v.to_dict() for v in self.variables]}


class TemplateFileError(ValueError):
    """A template file (or record) that cannot be used; the message is one line for the CLI."""


class VariableError(ValueError):
    """Bad user variables, every problem at once.

    `details` maps `variables.<name>` to messages for a declared name or an unknown name
    that is a valid identifier, and `variables` itself for problems with the whole object
    (not an object, or unknown names that are not identifiers), as in marshmallow's errors.
    """

    def __init__(self, details: dict[str, list[str]]) -> None:
        self.details = details
        summary = "; ".join(f"{key}: {' '.join(msgs)}" for key, msgs in details.items())
        super().__init__(f"invalid variables: {summary}")


@dataclass(frozen=True)
class _Where:
    """Where in a file a problem is, so the one-line message can point at it."""

    source: str
    index: int | None  # 1-based, as people count entries
    slug: str | None = None

    def error(self, fieldname: str, message: str) -> TemplateFileError:
        place = self.source
        if self.index is not None:
            place += f": entry {self.index}"
        if self.slug is not None:
            place += f" ({self.slug})" if self.index is not None else f": {self.slug}"
        return TemplateFileError(f"{place}: {fieldname}: {message}")


def _short(value: object, limit: int = 40) -> str:
    """A safe one-line rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: object) -> str:
    """A JSON-ish name for a value's type, for messages users understand."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _has_control(text: str, allowed: frozenset[str] = frozenset()) -> bool:
    """Control characters and line/paragraph separators, which no prompt text should carry."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") and ch not in allowed
               for ch in text)


def _placeholders(text: str) -> tuple[list[str], bool]:
    """The `{name}` placeholders in a template text, and whether a stray brace remains."""
    names = [m.group(1) for m in TOKEN_RE.finditer(text) if m.group(1)]
    leftover = TOKEN_RE.sub("", text)
    return names, "{" in leftover or "}" in leftover


def _text(where: _Where, entry: Mapping[str, Any], key: str, limit: int,
          allowed: frozenset[str] = frozenset()) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise where.error(key, f"must be a non-empty string, not {_short(value)}")
    if len(value) > limit:
        raise where.error(key, f"must be at most {limit} characters")
    if _has_control(value, allowed):
        raise where.error(key, "must not contain control characters")
    return value


def _parse_variable(raw: object, position: int, where: _Where, strict: bool
                    ) -> TemplateVariable:
    label = f"variables[{position}]"
    if not isinstance(raw, Mapping):
        raise where.error(label, f"must be an object, not {_kind(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not VARIABLE_NAME_RE.fullmatch(name):
        raise where.error(f"{label}.name", f"must be an identifier like city_name, "
                                           f"not {_short(name)}")
    label = f"variables.{name}"
    if strict and (unknown := sorted(set(map(str, raw)) - VARIABLE_KEYS)):
        raise where.error(label, f"unknown key {_short(unknown[0])} "
                                 f"(allowed: {', '.join(sorted(VARIABLE_KEYS))})")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise where.error(f"{label}.required", f"must be true or false, not {_short(required)}")
    max_length = raw.get("max_length")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or not 1 <= max_length <= MAX_VALUE_LENGTH):
        raise where.error(f"{label}.max_length",
                          f"must be a whole number from 1 to {MAX_VALUE_LENGTH}, "
                          f"not {_short(max_length)}")
    limit = max_length or MAX_VALUE_LENGTH

    def check_value(value: object, fieldname: str) -> str:
        if not isinstance(value, str):
            raise where.error(fieldname, f"must be a string (quote it in YAML), not {_kind(value)}")
        if value != value.strip() or not value:
            raise where.error(fieldname, "must be non-empty without surrounding whitespace")
        if _has_control(value):
            raise where.error(fieldname, "must not contain control characters")
        if len(value) > limit:
            raise where.error(fieldname, f"is longer than max_length {limit}")
        return value

    choices_raw = raw.get("choices")
    choices: tuple[str, ...] | None = None
    if choices_raw is not None:
        if not isinstance(choices_raw, list | tuple) or not choices_raw:
            raise where.error(f"{label}.choices", "must be a non-empty list of strings")
        choices = tuple(check_value(c, f"{label}.choices") for c in choices_raw)
        if len(set(choices)) != len(choices):
            raise where.error(f"{label}.choices", "must not repeat a value")
    default = raw.get("default")
    if default == "" and not required:
        pass  # the usual way to write an optional free-text field: empty unless given
    elif default == "":
        raise where.error(f"{label}.default", "must not be empty for a required variable "
                                              "(leave it out, or make the variable optional)")
    elif default is not None:
        default = check_value(default, f"{label}.default")
    if default is not None:
        if choices is not None and default not in choices:
            raise where.error(f"{label}.default",
                              f"{_short(default)} is not one of the choices")
    return TemplateVariable(name=name, required=required, default=default, choices=choices,
                            max_length=max_length)


def _parse_durations(raw: object, where: _Where) -> dict[str, int]:
    message = 'must map "5"/"10"-like strings to positive integers'
    if not isinstance(raw, Mapping) or not raw:
        raise where.error("durations", message)
    durations: dict[str, int] = {}
    for key, cost in raw.items():
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)  # YAML reads an unquoted 5 as a number
        if not isinstance(key, str) or not DURATION_KEY_RE.fullmatch(key):
            raise where.error("durations", f"{message} (bad duration {_short(key)})")
        if isinstance(cost, bool) or not isinstance(cost, int) or not 0 < cost <= MAX_CREDITS:
            raise where.error("durations", f"{message} (bad cost {_short(cost)} for {key!r})")
        if key in durations:
            raise where.error("durations", f"{message} (duration {key!r} given twice)")
        durations[key] = cost
    return dict(sorted(durations.items(), key=lambda item: int(item[0])))


def _parse_entry(entry: object, where: _Where, strict: bool = True) -> VideoTemplate:
    """Validate one template object; `strict` rejects unknown keys (files, not stored records)."""
    if not isinstance(entry, Mapping):
        raise where.error("entry", f"must be an object, not {_kind(entry)}")
    slug = entry.get("slug")
    if not isinstance(slug, str) or not SLUG_RE.fullmatch(slug):
        raise where.error("slug", f"must be lowercase letters, digits and dashes (at most 64), "
                                  f"not {_short(slug)}")
    where = _Where(where.source, where.index, slug)
    if strict and (unknown := sorted(set(map(str, entry)) - TEMPLATE_KEYS)):
        raise where.error(unknown[0], f"unknown key (allowed: {', '.join(sorted(TEMPLATE_KEYS))})")
    name = _text(where, entry, "name", MAX_NAME_LENGTH)
    model = entry.get("model")
    if (not isinstance(model, str) or len(model) > MAX_MODEL_LENGTH
            or not MODEL_RE.fullmatch(model)):
        raise where.error("model", f"must be a fal endpoint id like owner/app/path, "
                                   f"not {_short(model)}")
    prompt = _text(where, entry, "prompt", MAX_PROMPT_LENGTH, PROMPT_WHITESPACE)
    negative_prompt = None
    if entry.get("negative_prompt") is not None:
        negative_prompt = _text(where, entry, "negative_prompt", MAX_PROMPT_LENGTH,
                                PROMPT_WHITESPACE)

    raw_variables = entry.get("variables")
    if raw_variables is None:
        raw_variables = []
    if not isinstance(raw_variables, list | tuple):
        raise where.error("variables", f"must be a list, not {_kind(raw_variables)}")
    variables = tuple(_parse_variable(raw, i, where, strict)
                      for i, raw in enumerate(raw_variables, start=1))
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise where.error(f"variables.{twice}", "is declared twice")

    for key, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if text is None:
            continue
        used, stray = _placeholders(text)
        if stray:
            raise where.error(key, "has a brace that is not a {name} placeholder "
                                   "(write {{ and }} for literal braces)")
        if undeclared := [n for n in used if n not in names]:
            raise where.error(key, f"uses undeclared variable {{{undeclared[0]}}}")

    durations = _parse_durations(entry.get("durations"), where)
    active = entry.get("active", True)
    if not isinstance(active, bool):
        raise where.error("active", f"must be true or false, not {_short(active)}")
    return VideoTemplate(slug=slug, name=name, model=model, prompt=prompt,
                         negative_prompt=negative_prompt, variables=variables,
                         durations=durations, active=active)


def parse_templates(data: object, source: str = "<input>") -> list[VideoTemplate]:
    """Validate decoded file content (a list of template objects) with file-pointing errors."""
    if not isinstance(data, list):
        raise TemplateFileError(f"{source}: expected a list of templates, not {_kind(data)}")
    if not data:
        raise TemplateFileError(f"{source}: contains no templates")
    templates: list[VideoTemplate] = []
    seen: set[str] = set()
    for index, entry in enumerate(data, start=1):
        template = _parse_entry(entry, _Where(source, index))
        if template.slug in seen:
            raise _Where(source, index, template.slug).error("slug", "is used by an earlier entry")
        seen.add(template.slug)
        templates.append(template)
    return templates


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses repeated mapping keys, which YAML would silently overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                continue  # unhashable; the base class reports it
            if key in keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_short(key)}", key_node.start_mark)
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {_short(key)}")
        result[key] = value
    return result


def _load_json(text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_json_pairs)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def _load_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{exc.problem or exc.context or 'bad YAML'}{where}") from None
    except yaml.YAMLError as exc:
        raise ValueError(" ".join(str(exc).split())) from None


def load_template_file(path: str | Path) -> list[VideoTemplate]:
    """Read and validate a `.yaml`/`.yml`/`.json` template file (other names: JSON, then YAML)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TemplateFileError(f"{source}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise TemplateFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = _load_yaml(text)
        elif suffix == ".json":
            data = _load_json(text)
        else:
            try:
                data = _load_json(text)
            except ValueError:
                data = _load_yaml(text)
    except ValueError as exc:
        raise TemplateFileError(f"{source}: cannot parse: {' '.join(str(exc).split())}") from None
    return parse_templates(data, source)


def _check_value(variable: TemplateVariable, value: object) -> tuple[str | None, str | None]:
    """(clean value, None) or (None, message); an empty optional value means "use the default"."""
    if not isinstance(value, str):
        return None, f"Must be a string, not {_kind(value)}."
    value = value.strip()
    if _has_control(value):
        return None, "Must not contain control characters."
    if not value:
        return None, ("Must not be empty." if variable.required else None)
    limit = min(variable.max_length or MAX_VALUE_LENGTH, MAX_VALUE_LENGTH)
    if len(value) > limit:
        return None, f"Longer than maximum length {limit}."
    if variable.choices is not None and value not in variable.choices:
        return None, f"Must be one of: {', '.join(variable.choices)}."
    return value, None


def resolve_variables(template: VideoTemplate, supplied: Mapping[str, object]) -> dict[str, str]:
    """Check a user's variables and fill in defaults: every declared name -> the value used.

    Raises VariableError listing every problem (see its docstring for the `details` keys).
    """
    if not isinstance(supplied, Mapping):
        raise VariableError({"variables": ["Must be an object."]})
    declared = {v.name: v for v in template.variables}
    details: dict[str, list[str]] = {}
    unknown = [str(name) for name in supplied if name not in declared]
    odd: list[str] = []
    for name in unknown[:MAX_REPORTED_UNKNOWN]:
        if VARIABLE_NAME_RE.fullmatch(name):
            details[f"variables.{name}"] = ["Unknown variable."]
        else:
            odd.append(f"Unknown variable: {_short(name)}.")
    if len(unknown) > MAX_REPORTED_UNKNOWN:
        odd.append(f"{len(unknown) - MAX_REPORTED_UNKNOWN} more unknown variables.")
    if odd:
        details["variables"] = odd

    values: dict[str, str] = {}
    for name, variable in declared.items():
        clean: str | None = None
        if name in supplied:
            clean, problem = _check_value(variable, supplied[name])
            if problem is not None:
                details[f"variables.{name}"] = [problem]
                continue
        if clean is None:
            if variable.default is not None:
                clean = variable.default
            elif variable.required:
                details[f"variables.{name}"] = ["Missing data for required field."]
                continue
            else:
                clean = ""
        values[name] = clean
    if details:
        raise VariableError(details)
    return values


def render_prompt(text: str, values: Mapping[str, str]) -> str:
    """Replace `{name}` placeholders in one pass, never via `str.format`.

    Only `{identifier}` is a placeholder and `{{`/`}}` are literal braces; anything else
    (`{0}`, `{a.b}`, `{a!r}`, `{a:>9}`) stays as written. Values are inserted verbatim and
    never scanned again, so a user's `{other}` stays `{other}`.
    """

    def replace(match: re.Match[str]) -> str:
        token, name = match.group(0), match.group(1)
        if name is None:
            return token[0]
        if name not in values:
            raise ValueError(f"no value for placeholder {{{name}}}")
        value = values[name]
        if not isinstance(value, str):
            raise ValueError(f"value for placeholder {{{name}}} must be a string")
        return value

    return TOKEN_RE.sub(replace, text)


def render_inputs(template: VideoTemplate, values: Mapping[str, str]) -> tuple[str, str | None]:
    """The provider's (prompt, negative_prompt) for resolved variables."""
    negative = (render_prompt(template.negative_prompt, values)
                if template.negative_prompt is not None else None)
    return render_prompt(template.prompt, values), negative
