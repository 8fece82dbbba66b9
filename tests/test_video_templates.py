"""The template domain module: file validation, user variables and injection-proof rendering."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.video_templates import (
    MAX_VALUE_LENGTH,
    TemplateFileError,
    TemplateVariable,
    VariableError,
    VideoTemplate,
    load_template_file,
    parse_templates,
    render_inputs,
    render_prompt,
    resolve_variables,
)

DEMO = Path(__file__).resolve().parents[1] / "app" / "demo" / "templates.yaml"
MODEL = "fal-ai/kling-video/v2.1/standard/image-to-video"


def entry(**overrides: Any) -> dict[str, Any]:
    """A valid template object; keyword arguments replace (or, with ..., remove) fields."""
    base: dict[str, Any] = {
        "slug": "night-life-roller", "name": "Night Life Roller", "model": MODEL,
        "prompt": "A car in {city}, {mood} mood", "negative_prompt": "blurry, {mood}",
        "variables": [{"name": "city", "default": "Tokyo", "max_length": 40},
                      {"name": "mood", "choices": ["calm", "wild"], "default": "wild"}],
        "durations": {"5": 500, "10": 1000}, "active": True,
    }
    for key, value in overrides.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def template(**overrides: Any) -> VideoTemplate:
    return parse_templates([entry(**overrides)])[0]


def fails(data: object, *says: str) -> str:
    with pytest.raises(TemplateFileError) as info:
        parse_templates(data, "templates.yaml")
    message = str(info.value)
    assert "\n" not in message
    for text in says:
        assert text in message, message
    return message


# --- the demo file -------------------------------------------------------------------------

def test_demo_file_loads_with_night_life_roller() -> None:
    templates = load_template_file(DEMO)
    assert len(templates) >= 3
    assert len({t.slug for t in templates}) == len(templates)
    roller = next(t for t in templates if t.slug == "night-life-roller")
    assert roller.name == "Night Life Roller"
    assert roller.model == MODEL
    assert roller.durations == {"5": 500, "10": 1000}
    by_name = {v.name: v for v in roller.variables}
    assert by_name["city"].default == "Tokyo" and by_name["city"].max_length == 40
    assert by_name["mood"].choices == ("calm", "energetic", "dreamy")
    assert by_name["mood"].default == "energetic"
    assert any(v.required for t in templates for v in t.variables)
    assert any(t.negative_prompt for t in templates)
    # With only defaults, the roller renders with no braces left over.
    prompt, negative = render_inputs(roller, resolve_variables(roller, {}))
    assert "Tokyo" in prompt and "energetic" in prompt and "{" not in prompt
    assert negative is not None and "{" not in negative


def test_demo_file_and_package_marker_exist() -> None:
    assert (DEMO.parent / "__init__.py").is_file()


# --- parsing: good files -------------------------------------------------------------------

def test_minimal_entry_gets_defaults() -> None:
    [t] = parse_templates([{"slug": "a", "name": "A", "model": "fal-ai/x", "prompt": "p",
                            "durations": {"5": 1}}])
    assert t.negative_prompt is None and t.variables == () and t.active is True
    assert t.durations == {"5": 1}


def test_full_entry_parses() -> None:
    t = template()
    assert t.slug == "night-life-roller" and t.negative_prompt == "blurry, {mood}"
    assert t.variables == (TemplateVariable("city", False, "Tokyo", None, 40),
                           TemplateVariable("mood", False, "wild", ("calm", "wild"), None))


def test_yaml_integer_duration_keys_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "t.yml"
    path.write_text("- slug: a\n  name: A\n  model: fal-ai/x\n  prompt: p\n"
                    "  durations: {10: 1000, 5: 500}\n")
    [t] = load_template_file(path)
    assert t.durations == {"5": 500, "10": 1000}
    assert list(t.durations) == ["5", "10"]


def test_json_and_yaml_files_load_the_same(tmp_path: Path) -> None:
    data = [entry(), entry(slug="second", active=False)]
    (tmp_path / "t.json").write_text(json.dumps(data))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "t.templates").write_text(yaml.safe_dump(data))  # unknown extension: YAML
    (tmp_path / "t.txt").write_text(json.dumps(data))  # unknown extension: JSON
    loaded = [load_template_file(tmp_path / n) for n in ("t.json", "t.yaml", "t.templates")]
    loaded.append(load_template_file(str(tmp_path / "t.txt")))
    assert all(x == loaded[0] for x in loaded)
    assert [t.active for t in loaded[0]] == [True, False]


def test_literal_braces_are_allowed_in_prompts() -> None:
    t = template(prompt="a {{logo}} on {city}", negative_prompt=None)
    assert render_prompt(t.prompt, {"city": "Oslo", "mood": "x"}) == "a {logo} on Oslo"


def test_model_with_two_segments_and_dots() -> None:
    assert template(model="owner/app").model == "owner/app"
    assert template(model="fal-ai/veo3.1/fast").model == "fal-ai/veo3.1/fast"


# --- parsing: bad files ----------------------------------------------------------------------

def test_file_must_be_a_non_empty_list() -> None:
    fails({"slug": "a"}, "templates.yaml", "list")
    fails(None, "templates.yaml", "list")
    fails([], "no templates")
    fails(["just a string"], "entry 1", "object")


def test_messages_name_entry_index_slug_and_field() -> None:
    bad = entry(slug="second", durations={"5": 0})
    message = fails([entry(), bad], "templates.yaml: entry 2 (second): durations:",
                    '"5"/"10"')
    assert message.startswith("templates.yaml: entry 2 (second): durations: must map")


@pytest.mark.parametrize("durations", [
    None, {}, [], {"5": 0}, {"5": -1}, {"5": "500"}, {"5": 1.5}, {"5": True}, {"five": 1},
    {"0": 1}, {"05": 1}, {"-5": 1}, {True: 1}, {"5": None}, {"5 ": 1},
])
def test_bad_durations(durations: Any) -> None:
    fails([entry(durations=durations)], "entry 1 (night-life-roller): durations:")


def test_durations_is_required() -> None:
    fails([entry(durations=...)], "durations")


def test_int_and_string_duration_keys_colliding() -> None:
    fails([entry(durations={5: 1, "5": 2})], "durations", "twice")


@pytest.mark.parametrize("slug", ["", "Night", "-lead", "a_b", "a b", "a" * 65, 5, None,
                                  "é", "a\n"])
def test_bad_slugs(slug: Any) -> None:
    fails([entry(slug=slug)], "entry 1: slug:")


def test_slug_length_limit_is_64() -> None:
    assert template(slug="a" * 64).slug == "a" * 64


def test_duplicate_slug_in_one_file() -> None:
    fails([entry(), entry(name="Other")], "entry 2 (night-life-roller): slug:", "earlier")


@pytest.mark.parametrize("model", ["", "kling", "/fal-ai/x", "fal-ai/x/", "fal-ai//x",
                                   "fal-ai/../x", "fal-ai/x?y=1", "https://evil/x", "fal ai/x",
                                   "fal-ai/x#y", None, 3, "a/" + "b" * 300])
def test_bad_models(model: Any) -> None:
    fails([entry(model=model)], "model:")


@pytest.mark.parametrize("field", ["name", "prompt"])
@pytest.mark.parametrize("value", ["", "   ", None, 5, ["x"]])
def test_required_text_fields(field: str, value: Any) -> None:
    fails([entry(**{field: value})], f"{field}:")


@pytest.mark.parametrize("field", ["slug", "name", "model", "prompt"])
def test_missing_required_fields(field: str) -> None:
    fails([entry(**{field: ...})], f"{field}:")


def test_control_characters_in_prompt_rejected_but_newlines_ok() -> None:
    fails([entry(prompt="a \x00 {city} {mood}")], "prompt:", "control")
    fails([entry(name="Night\nLife")], "name:", "control")
    assert template(prompt="line one {city}\nline two {mood}\t.").prompt.count("\n") == 1


def test_unknown_top_level_key_is_an_error() -> None:
    fails([entry(durration={"5": 1})], "entry 1 (night-life-roller): durration:", "unknown")
    fails([entry(negative_promt="x")], "negative_promt")


def test_unknown_variable_key_is_an_error() -> None:
    fails([entry(variables=[{"name": "city", "defualt": "x"}], prompt="p {city}",
                 negative_prompt=None)], "variables.city", "defualt")


@pytest.mark.parametrize("text", ["A car in {town}", "A car in {city} {Mood}"])
def test_undeclared_placeholder_in_prompt(text: str) -> None:
    fails([entry(prompt=text)], "prompt:", "undeclared")


def test_undeclared_placeholder_in_negative_prompt() -> None:
    fails([entry(negative_prompt="no {blur}")], "negative_prompt:", "{blur}")


@pytest.mark.parametrize("text", ["{city.__class__}", "{city!r}", "{city:>9}", "{0}", "{}",
                                  "{ city }", "open { only", "close } only"])
def test_format_like_or_stray_braces_in_a_prompt_are_rejected(text: str) -> None:
    fails([entry(prompt=f"A car {text}")], "prompt:", "brace")


def test_variables_must_be_a_list_of_objects() -> None:
    fails([entry(variables={"city": {}})], "variables:", "list")
    fails([entry(variables=["city"])], "variables[1]:", "object")


@pytest.mark.parametrize("name", ["", "1city", "ci-ty", "ci ty", "a" * 65, None, 7, "città"])
def test_bad_variable_names(name: Any) -> None:
    fails([entry(variables=[{"name": name}], prompt="p", negative_prompt=None)],
          "variables[1].name:")


def test_duplicate_variable_names() -> None:
    fails([entry(variables=[{"name": "city"}, {"name": "city"}, {"name": "mood"}])],
          "variables.city", "twice")


@pytest.mark.parametrize("variable, says", [
    ({"name": "mood", "choices": ["calm"], "default": "wild"}, "variables.mood.default"),
    ({"name": "mood", "max_length": 3, "default": "wild"}, "variables.mood.default"),
    ({"name": "mood", "default": 5}, "variables.mood.default"),
    ({"name": "mood", "required": True, "default": ""}, "variables.mood.default"),
    ({"name": "mood", "choices": ["calm"], "default": ""}, "variables.mood.default"),
    ({"name": "mood", "default": " wild"}, "variables.mood.default"),
    ({"name": "mood", "default": "wi\x07ld"}, "variables.mood.default"),
    ({"name": "mood", "default": "x" * (MAX_VALUE_LENGTH + 1)}, "variables.mood.default"),
    ({"name": "mood", "choices": []}, "variables.mood.choices"),
    ({"name": "mood", "choices": "calm"}, "variables.mood.choices"),
    ({"name": "mood", "choices": ["calm", "calm"]}, "variables.mood.choices"),
    ({"name": "mood", "choices": ["calm", 2]}, "variables.mood.choices"),
    ({"name": "mood", "choices": ["calm", "wild"], "max_length": 3}, "variables.mood.choices"),
    ({"name": "mood", "max_length": 0}, "variables.mood.max_length"),
    ({"name": "mood", "max_length": "40"}, "variables.mood.max_length"),
    ({"name": "mood", "max_length": True}, "variables.mood.max_length"),
    ({"name": "mood", "max_length": MAX_VALUE_LENGTH + 1}, "variables.mood.max_length"),
    ({"name": "mood", "required": "yes"}, "variables.mood.required"),
])
def test_bad_variable_definitions(variable: dict[str, Any], says: str) -> None:
    fails([entry(variables=[{"name": "city"}, variable])], says)


def test_optional_variable_may_default_to_empty() -> None:
    t = template(prompt="a car {note}", negative_prompt=None,
                 variables=[{"name": "note", "default": ""}])
    assert t.variables[0].default == ""
    assert t.variables[0].to_dict()["default"] == ""
    assert resolve_variables(t, {}) == {"note": ""}
    assert resolve_variables(t, {"note": "at dusk"}) == {"note": "at dusk"}


def test_optional_empty_default_loads_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("- slug: notes\n  name: Notes\n  model: fal-ai/x/y\n"
                    "  prompt: a car {note}\n  durations: {5: 100}\n"
                    "  variables:\n    - name: note\n      default: \"\"\n")
    [loaded] = load_template_file(path)
    assert loaded.variables[0].default == ""


def test_active_must_be_boolean() -> None:
    fails([entry(active="false")], "active:")
    assert template(active=False).active is False


def test_missing_file() -> None:
    with pytest.raises(TemplateFileError) as info:
        load_template_file("/nonexistent/dir/file.yaml")
    assert "/nonexistent/dir/file.yaml" in str(info.value) and "cannot read" in str(info.value)


def test_directory_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(TemplateFileError, match="cannot read"):
        load_template_file(tmp_path)
    binary = tmp_path / "t.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TemplateFileError, match="UTF-8"):
        load_template_file(binary)


@pytest.mark.parametrize("name, text, says", [
    ("t.json", "[{\"slug\": ", "line 1"),
    ("t.json", "- slug: a", "cannot parse"),  # YAML in a .json file is not JSON
    ("t.yaml", "- slug: [unclosed\n", "line"),
    ("t.yaml", "- slug: a\n  slug: b\n", "duplicate key"),
    ("t.json", '[{"slug": "a", "slug": "b"}]', "duplicate key"),
    ("t.yaml", "- !!python/object/apply:os.system ['true']\n", "cannot parse"),
    ("t.yaml", "", "list"),
    ("t.other", "{{{{", "cannot parse"),
])
def test_unparseable_files(tmp_path: Path, name: str, text: str, says: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TemplateFileError) as info:
        load_template_file(path)
    message = str(info.value)
    assert message.startswith(str(path)) and says in message and "\n" not in message, message


def test_validation_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump([entry(), entry(slug="two", prompt="{nope}")]))
    with pytest.raises(TemplateFileError) as info:
        load_template_file(path)
    assert str(info.value).startswith(f"{path}: entry 2 (two): prompt:")


def test_template_file_error_is_a_value_error() -> None:
    assert issubclass(TemplateFileError, ValueError)
    assert issubclass(VariableError, ValueError)


# --- records and the public shape ------------------------------------------------------------

def test_to_record_has_spec_fields() -> None:
    record = template().to_record()
    assert set(record) == {"slug", "name", "model", "prompt", "negative_prompt", "variables",
                           "durations", "active"}
    assert record["variables"][1] == {"name": "mood", "required": False, "default": "wild",
                                      "choices": ["calm", "wild"], "max_length": None}
    assert record["durations"] == {"5": 500, "10": 1000}
    assert json.loads(json.dumps(record)) == record  # plain JSON-able data


def test_to_record_omits_missing_negative_prompt() -> None:
    assert "negative_prompt" not in template(negative_prompt=None).to_record()


def test_record_round_trip_tolerates_store_keys() -> None:
    for t in [template(), template(negative_prompt=None, active=False), *load_template_file(DEMO)]:
        record = t.to_record()
        stored = {**copy.deepcopy(record), "id": "template:" + t.slug,
                  "updated_at": "2025-01-01T00:00:00Z"}
        assert VideoTemplate.from_record(stored) == t
        assert VideoTemplate.from_record(record).to_record() == record


def test_from_record_tolerates_none_fields_dropped_by_the_store() -> None:
    record = template().to_record()
    record["variables"] = [{k: v for k, v in var.items() if v is not None}
                           for var in record["variables"]]
    assert VideoTemplate.from_record(record) == template()


def test_from_record_still_validates() -> None:
    record = {**template().to_record(), "prompt": "{undeclared}"}
    with pytest.raises(TemplateFileError):
        VideoTemplate.from_record(record)


def test_records_do_not_share_state_with_the_template() -> None:
    t = template()
    t.to_record()["durations"]["5"] = 1
    t.public_dict()["durations"]["5"] = 1
    assert t.durations["5"] == 500


def test_public_dict_shape() -> None:
    public = template().public_dict()
    assert public == {
        "slug": "night-life-roller", "name": "Night Life Roller",
        "durations": {"5": 500, "10": 1000},
        "variables": [
            {"name": "city", "required": False, "default": "Tokyo", "choices": None,
             "max_length": 40},
            {"name": "mood", "required": False, "default": "wild", "choices": ["calm", "wild"],
             "max_length": None},
        ],
    }


def test_templates_are_hashable_values() -> None:
    assert hash(template()) == hash(template())
    assert template() == template() and template() != template(active=False)


# --- resolve_variables -----------------------------------------------------------------------

def strict_template() -> VideoTemplate:
    return template(
        prompt="{product} in {city}, {mood}, {note}", negative_prompt=None,
        variables=[{"name": "product", "required": True, "max_length": 10},
                   {"name": "city", "default": "Tokyo", "max_length": 40},
                   {"name": "mood", "choices": ["calm", "wild"], "default": "wild"},
                   {"name": "note"}])


def variable_errors(t: VideoTemplate, supplied: Any) -> dict[str, list[str]]:
    with pytest.raises(VariableError) as info:
        resolve_variables(t, supplied)
    details = info.value.details
    assert details and all(isinstance(v, list) and v for v in details.values())
    assert all(isinstance(m, str) for v in details.values() for m in v)
    return details


def test_defaults_fill_every_declared_variable() -> None:
    assert resolve_variables(strict_template(), {"product": "lamp"}) == {
        "product": "lamp", "city": "Tokyo", "mood": "wild", "note": ""}


def test_supplied_values_win_and_are_stripped() -> None:
    got = resolve_variables(strict_template(), {"product": "  lamp ", "city": "Lisbon",
                                                "mood": "calm", "note": "dusk\n"})
    assert got == {"product": "lamp", "city": "Lisbon", "mood": "calm", "note": "dusk"}


def test_empty_optional_value_falls_back_to_its_default() -> None:
    got = resolve_variables(strict_template(), {"product": "lamp", "city": "  ", "note": ""})
    assert got["city"] == "Tokyo" and got["note"] == ""


def test_missing_required_variable() -> None:
    assert variable_errors(strict_template(), {}) == {
        "variables.product": ["Missing data for required field."]}


def test_empty_required_variable() -> None:
    details = variable_errors(strict_template(), {"product": "   "})
    assert details == {"variables.product": ["Must not be empty."]}


def test_required_variable_with_default_uses_it_when_missing() -> None:
    t = template(prompt="{x}", negative_prompt=None,
                 variables=[{"name": "x", "required": True, "default": "d"}])
    assert resolve_variables(t, {}) == {"x": "d"}
    assert variable_errors(t, {"x": ""}) == {"variables.x": ["Must not be empty."]}


def test_choices_are_exact() -> None:
    for bad in ["Calm", "calm.", "wil", "calm wild"]:
        details = variable_errors(strict_template(), {"product": "lamp", "mood": bad})
        assert details == {"variables.mood": ["Must be one of: calm, wild."]}


def test_max_length() -> None:
    assert resolve_variables(strict_template(), {"product": "x" * 10})["product"] == "x" * 10
    details = variable_errors(strict_template(), {"product": "x" * 11})
    assert details == {"variables.product": ["Longer than maximum length 10."]}


def test_global_cap_applies_without_max_length() -> None:
    ok = resolve_variables(strict_template(), {"product": "p", "note": "n" * MAX_VALUE_LENGTH})
    assert len(ok["note"]) == MAX_VALUE_LENGTH
    details = variable_errors(strict_template(), {"product": "p", "note": "n" * 100_000})
    assert details == {"variables.note": [f"Longer than maximum length {MAX_VALUE_LENGTH}."]}


def test_unknown_variables() -> None:
    details = variable_errors(strict_template(), {"product": "lamp", "bogus": "x"})
    assert details == {"variables.bogus": ["Unknown variable."]}


def test_unknown_names_that_are_not_identifiers_go_under_variables() -> None:
    details = variable_errors(strict_template(), {"product": "lamp", "a b": "x", "": "y"})
    assert list(details) == ["variables"] and len(details["variables"]) == 2


def test_many_unknown_names_are_reported_briefly() -> None:
    supplied: dict[str, object] = {f"v{i}": "x" for i in range(1000)}
    details = variable_errors(strict_template(), {"product": "lamp", **supplied})
    assert len(details) <= 12
    assert any("more unknown" in m for m in details["variables"])


@pytest.mark.parametrize("value, kind", [
    (5, "number"), (1.5, "number"), (True, "boolean"), (False, "boolean"), (["a"], "list"),
    ({"a": 1}, "object"), (None, "null"),
])
def test_values_must_be_strings(value: object, kind: str) -> None:
    details = variable_errors(strict_template(), {"product": "lamp", "city": value})
    assert list(details) == ["variables.city"]
    assert "string" in details["variables.city"][0] and kind in details["variables.city"][0]


@pytest.mark.parametrize("value", ["To\x00kyo", "To\nkyo", "To\tkyo", "Tok\x1byo",
                                   "To\x7fkyo", "To\u2028kyo", "To\x85kyo"])
def test_control_characters_rejected(value: str) -> None:
    details = variable_errors(strict_template(), {"product": "lamp", "city": value})
    assert details == {"variables.city": ["Must not contain control characters."]}


def test_unicode_text_is_fine() -> None:
    got = resolve_variables(strict_template(), {"product": "lámpara", "city": "東京 🌃"})
    assert got["product"] == "lámpara" and got["city"] == "東京 🌃"


def test_all_errors_are_collected() -> None:
    details = variable_errors(strict_template(), {
        "city": 3, "mood": "furious", "note": "a\x00b", "bogus": "x"})
    assert set(details) == {"variables.product", "variables.city", "variables.mood",
                            "variables.note", "variables.bogus"}
    with pytest.raises(VariableError) as info:
        resolve_variables(strict_template(), {"mood": "furious"})
    assert "variables.mood" in str(info.value) and "variables.product" in str(info.value)


def test_variables_must_be_an_object() -> None:
    for supplied in (["product"], "product=lamp", None, 5):
        assert variable_errors(strict_template(), supplied) == {
            "variables": ["Must be an object."]}


def test_template_without_variables() -> None:
    t = template(prompt="plain", negative_prompt=None, variables=...)
    assert resolve_variables(t, {}) == {}
    assert variable_errors(t, {"city": "x"}) == {"variables.city": ["Unknown variable."]}


# --- render_prompt -----------------------------------------------------------------------------

VALUES = {"name": "Ana", "other": "OTHER", "city": "Oslo"}


def test_plain_substitution() -> None:
    assert render_prompt("Hi {name} from {city}, {name}!", VALUES) == "Hi Ana from Oslo, Ana!"


@pytest.mark.parametrize("text", [
    "{name.__class__}", "{name.__class__.__mro__}", "{name!r}", "{name!s:>10}",
    "{name:>99999}", "{0}", "{}", "{name[0]}", "{ name }", "{name", "name}", "{-}",
])
def test_format_syntax_is_inert(text: str) -> None:
    assert render_prompt(text, VALUES) == text


def test_huge_format_width_does_not_allocate() -> None:
    assert len(render_prompt("{name:>999999999}", VALUES)) == len("{name:>999999999}")


def test_escaped_braces() -> None:
    assert render_prompt("{{literal}}", VALUES) == "{literal}"
    assert render_prompt("{{name}}", VALUES) == "{name}"
    assert render_prompt("{{{name}}}", VALUES) == "{Ana}"
    assert render_prompt("}}{{", VALUES) == "}{"


@pytest.mark.parametrize("value", ["{other}", "{{other}}", "{name.__class__}", "{0}", "{}",
                                   "}}{{", "{name!r}"])
def test_values_are_inserted_literally_and_not_rescanned(value: str) -> None:
    assert render_prompt("[{name}]", {**VALUES, "name": value}) == f"[{value}]"


def test_placeholder_without_value_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"\{missing\}") as info:
        render_prompt("a {missing} b", VALUES)
    assert not isinstance(info.value, KeyError)


def test_output_is_bounded_by_the_value_cap() -> None:
    t = template(prompt="{city} " * 20, negative_prompt=None,
                 variables=[{"name": "city"}])
    values = resolve_variables(t, {"city": "x" * MAX_VALUE_LENGTH})
    prompt, negative = render_inputs(t, values)
    assert negative is None and len(prompt) <= len(t.prompt) + 20 * MAX_VALUE_LENGTH
    with pytest.raises(VariableError):
        resolve_variables(t, {"city": "x" * (MAX_VALUE_LENGTH + 1)})


def test_render_inputs_renders_both_prompts() -> None:
    t = template()
    values = resolve_variables(t, {"city": "{mood}", "mood": "calm"})
    assert render_inputs(t, values) == ("A car in {mood}, calm mood", "blurry, calm")
    assert render_inputs(template(negative_prompt=None), values)[1] is None


def test_user_values_cannot_reach_attributes_through_the_whole_pipeline() -> None:
    t = template(prompt="{city} and {mood}", negative_prompt=None,
                 variables=[{"name": "city"}, {"name": "mood"}])
    sneaky = {"city": "{mood.__class__.__init__.__globals__}", "mood": "{0}{city!r}"}
    prompt, _ = render_inputs(t, resolve_variables(t, sneaky))
    assert prompt == "{mood.__class__.__init__.__globals__} and {0}{city!r}"
