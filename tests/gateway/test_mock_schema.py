"""The mock's schema-instance generator: each fixed schema's instance validates against it."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, Field

from gateway.providers.mock_schema import instance


class Address(BaseModel):
    street: str
    zip_code: str = Field(min_length=5, max_length=5)


class Person(BaseModel):
    name: str
    age: int = Field(ge=18, le=130)
    height: float = Field(gt=0)
    member: bool
    kind: str = Field(json_schema_extra={"enum": ["admin", "user"]})
    tags: list[str] = Field(min_length=2)
    home: Address
    previous: list[Address]
    nickname: str | None = None
    boss: Person | None


SCHEMAS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "string", "minLength": 10},
    {"type": "string", "maxLength": 2},
    {"type": "string", "format": "date-time"},
    {"type": "integer", "minimum": 7, "multipleOf": 5},
    {"type": "integer", "exclusiveMaximum": -3},
    {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5},
    {"type": "number", "minimum": 2.5},
    {"type": "boolean"},
    {"type": "null"},
    {"enum": ["red", "green"]},
    {"const": 42},
    {"type": ["null", "integer"], "minimum": 3},
    {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]},
    {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "object"}},
        "required": ["a", "c"],
        "additionalProperties": False,
    },
    {
        "anyOf": [
            {"type": "null"},
            {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
        ]
    },
    {"allOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]}, {"required": ["b"]}]},
    {
        "$defs": {"Leaf": {"type": "integer", "minimum": 1}},
        "type": "array",
        "items": {"$ref": "#/$defs/Leaf"},
        "minItems": 1,
    },
    Person.model_json_schema(),
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(i) for i in range(len(SCHEMAS))])
def test_instance_validates(schema: dict[str, Any]) -> None:
    jsonschema.validate(instance(schema), schema)


def test_pydantic_model_parses_its_instance_and_fills_required_fields_only() -> None:
    person = Person.model_validate(instance(Person.model_json_schema()))
    assert person.age == 18 and person.home.zip_code == "strin" and len(person.tags) == 2
    assert person.nickname is None  # not required: left out
    assert person.boss is None  # Optional[Person] inside Person: null, so the recursion ends


def test_instances_are_exact_and_minimal() -> None:
    assert instance({"type": "integer", "minimum": 7, "multipleOf": 5}) == 10
    assert instance({"type": "object", "properties": {"a": {"type": "string"}}}) == {}
    assert instance({"type": "string", "format": "email"}) == "user@example.com"
    assert instance({"$ref": "#/$defs/Missing"}) == {}  # an unresolvable reference: anything
