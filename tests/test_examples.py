"""Examples made from a JSON Schema (actors.pure.examples): valid, deterministic; and the mock
provider answers a structured ask with one."""

from __future__ import annotations

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.pure.examples import FORMATS, example_for

Validator = jsonschema.Draft202012Validator


def valid(schema, value) -> bool:
    return Validator(schema, format_checker=Validator.FORMAT_CHECKER).is_valid(value)


TABLE = [
    ({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["b"]},
     {"b": 0, "a": "example"}),
    ({"type": "string", "enum": ["first", "second"]}, "first"),
    ({"const": {"k": 1}}, {"k": 1}),
    ({"type": "array", "items": {"type": "boolean"}}, [False]),  # one item
    ({"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": True}, [0, 1, 2]),
    ({"type": "array", "maxItems": 0}, []),
    ({"type": "integer", "minimum": 5, "maximum": 9}, 5),
    ({"type": "integer", "exclusiveMinimum": 5}, 6),
    ({"type": "integer", "maximum": -3}, -3),
    ({"type": "integer", "minimum": 7, "multipleOf": 5}, 10),
    ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, 0.5),
    ({"type": "number", "minimum": 0.25}, 0.25),
    ({"type": "string", "minLength": 10}, "examplexxx"),
    ({"type": "string", "maxLength": 3}, "exa"),
    ({"type": "string", "pattern": "^[0-9]+$"}, "0"),
    ({"type": ["null", "string"]}, "example"),
    ({"type": "null"}, None),
    ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, 0),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}, {"required": ["a"]}]}, {"a": 0}),
    ({"$defs": {"p": {"type": "object", "properties": {"n": {"type": "string"}}, "required": ["n"]}},
      "type": "array", "items": {"$ref": "#/$defs/p"}}, [{"n": "example"}]),
    ({"type": "object", "minProperties": 2}, {"key1": "example", "key2": "example"}),
    ({"type": "object", "required": ["x"], "additionalProperties": {"type": "integer"}}, {"x": 0}),
]


@pytest.mark.parametrize(("schema", "expected"), TABLE)
def test_examples(schema, expected):
    value = example_for(schema)
    assert value == expected
    assert valid(schema, value)
    assert example_for(schema) == value  # deterministic


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_has_a_valid_example(fmt):
    schema = {"type": "string", "format": fmt}
    assert valid(schema, example_for(schema))
    distinct = example_for({"type": "array", "items": schema, "minItems": 3, "uniqueItems": True})
    assert len(set(distinct)) == 3 and all(valid(schema, v) for v in distinct)


def test_strings_can_carry_the_callers_text():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "when": {"type": "string", "format": "date"},
                                               "short": {"type": "string", "maxLength": 4}}}
    assert example_for(schema, text="capital of Norway") == {"answer": "capital of Norway", "when": "2024-01-01",
                                                             "short": "capi"}


# --- hypothesis: simple schemas, every example validates --------------------------------------

small_int = st.integers(min_value=-1000, max_value=1000)


@st.composite
def integer_schemas(draw):
    schema = {"type": "integer"}
    step = draw(st.none() | st.sampled_from([1, 2, 3, 5, 10]))
    low = draw(st.none() | small_int)
    high = draw(st.none() | st.integers(min_value=2 * (step or 1) + 2, max_value=500))
    if step:
        schema["multipleOf"] = step
    if low is not None:
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if high is not None:
        top = (low if low is not None else draw(small_int)) + high
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = top
    return schema


@st.composite
def number_schemas(draw):
    schema = {"type": "number"}
    halves = st.integers(min_value=-2000, max_value=2000).map(lambda n: n / 2)
    low = draw(st.none() | halves)
    if low is not None:
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        top = (low if low is not None else draw(halves)) + draw(st.integers(min_value=1, max_value=100))
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = top
    if draw(st.booleans()):
        schema["multipleOf"] = draw(st.sampled_from([0.5, 0.25, 1, 2]))
        if "maximum" in schema or "exclusiveMaximum" in schema:  # room for a multiple
            key = "maximum" if "maximum" in schema else "exclusiveMaximum"
            schema[key] += 5
    return schema


@st.composite
def string_schemas(draw):
    schema = {"type": "string"}
    if draw(st.booleans()):
        schema["format"] = draw(st.sampled_from(sorted(FORMATS)))
        return schema
    low = draw(st.integers(min_value=0, max_value=12))
    if draw(st.booleans()):
        schema["minLength"] = low
    if draw(st.booleans()):
        schema["maxLength"] = low + draw(st.integers(min_value=0, max_value=5))
    if draw(st.booleans()):
        schema["pattern"] = draw(st.sampled_from(["^[a-z]+$", "x", "^[0-9]*$", "[A-Z]", "^$|^e"]))
        schema.pop("minLength", None)
        schema.pop("maxLength", None)
    return schema


json_values = st.none() | st.booleans() | small_int | st.text(max_size=5)
names = st.text(alphabet="abcdefghij", min_size=1, max_size=4)
leaves = st.one_of(
    integer_schemas(), number_schemas(), string_schemas(),
    st.just({"type": "boolean"}), st.just({"type": "null"}), st.just({}),
    st.lists(json_values, min_size=1, max_size=3, unique_by=repr).map(lambda v: {"enum": v}),
    json_values.map(lambda v: {"const": v}),
)


def _objects(children):
    @st.composite
    def build(draw):
        props = draw(st.dictionaries(names, children, max_size=4))
        schema = {"type": "object", "properties": props}
        required = [k for k in props if draw(st.booleans())]
        if required:
            schema["required"] = required
        if draw(st.booleans()):
            schema["additionalProperties"] = False
        return schema

    return build()


def _arrays(children):
    @st.composite
    def build(draw):
        schema = {"type": "array", "items": draw(children)}
        low = draw(st.integers(min_value=0, max_value=3))
        if draw(st.booleans()):
            schema["minItems"] = low
        if draw(st.booleans()):
            schema["maxItems"] = low + draw(st.integers(min_value=0, max_value=2))
        return schema

    return build()


def _nullable(schema: dict) -> dict:
    typ = schema.get("type")
    return {**schema, "type": [typ, "null"]} if isinstance(typ, str) and typ != "null" else schema


schemas = st.recursive(
    leaves,
    lambda children: st.one_of(
        _objects(children), _arrays(children),
        st.lists(children, min_size=1, max_size=3).map(lambda b: {"anyOf": b}),
        children.map(_nullable),
    ),
    max_leaves=12,
)


@settings(deadline=None, max_examples=400)
@given(schemas)
def test_every_example_validates(schema):
    Validator.check_schema(schema)
    value = example_for(schema)
    assert valid(schema, value), (schema, value)
    assert example_for(schema) == value


# --- the mock provider ---------------------------------------------------------------------------

MOCK = """
[router]
strategy = "single"
providers = ["p"]

[providers.p]
"""

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "born": {"type": "string", "format": "date"},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
    },
    "required": ["name", "born", "age"],
    "additionalProperties": False,
}


@pytest.mark.anyio
@pytest.mark.parametrize("schema", [PERSON, {"type": "array", "items": PERSON, "minItems": 2}, {"type": "object"}])
async def test_the_mock_answers_with_data_the_schema_accepts(stack, schema):
    async with stack(MOCK, names=["router", "provider.p"]) as s:
        answer = await s.client.ask("who?", schema=schema, budget_ms=3000)
        assert valid(schema, answer.data), answer.data
        again = await s.client.ask("who?", schema=schema, cache="skip", budget_ms=3000)
        assert again.data == answer.data
        if schema is PERSON:
            assert answer.data == {"name": "who?", "born": "2024-01-01", "age": 18, "email": "user@example.com",
                                   "tags": ["a"]}
