"""Contract: our Wave documents fit Wave's reference schema and the sandbox SDL; the SDL is a subset of Wave's.

The reference is Wave's public schema vendored in sandboxes/wave/reference/ (SOURCE.md there says where it came
from), so these tests never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from graphql import (
    DocumentNode,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    StringValueNode,
    build_schema,
    get_named_type,
    parse,
    validate,
    visit,
)
from graphql.language import Visitor
from graphql.utilities.print_schema import print_input_value

from sandboxes.wave.build_schema import OMITTED_FIELDS, build_sdl
from sandboxes.wave.graphql_api import SCHEMA_PATH
from sandboxes.wave.reference_schema import load_reference_introspection, load_reference_schema
from scripts.refresh_wave_schema import check as check_vendored_dumps
from shared.wave.documents import ALL_DOCUMENTS


@pytest.fixture(scope="module")
def reference() -> GraphQLSchema:
    return load_reference_schema()


@pytest.fixture(scope="module")
def sandbox_schema() -> GraphQLSchema:
    return build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(ALL_DOCUMENTS))
def test_document_is_valid_against_wave_reference(reference: GraphQLSchema, name: str) -> None:
    assert validate(reference, parse(ALL_DOCUMENTS[name])) == []


@pytest.mark.parametrize("name", sorted(ALL_DOCUMENTS))
def test_document_is_valid_against_sandbox_sdl(sandbox_schema: GraphQLSchema, name: str) -> None:
    assert validate(sandbox_schema, parse(ALL_DOCUMENTS[name])) == []


def _inline_strings(document: DocumentNode) -> list[str]:
    found: list[str] = []

    class Strings(Visitor):
        def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
            found.append(node.value)

    visit(document, Strings())
    return found


@pytest.mark.parametrize("name", sorted(ALL_DOCUMENTS))
def test_document_passes_strings_only_as_variables(name: str) -> None:
    assert _inline_strings(parse(ALL_DOCUMENTS[name])) == []  # Wave requires String arguments as variables


def _own_types(schema: GraphQLSchema) -> Iterator[GraphQLNamedType]:
    for name, named in sorted(schema.type_map.items()):
        if not name.startswith("__") and name not in ("String", "Int", "Float", "Boolean", "ID"):
            yield named


def test_sandbox_sdl_is_a_subset_of_wave_reference(reference: GraphQLSchema, sandbox_schema: GraphQLSchema) -> None:
    problems: list[str] = []
    for ours in _own_types(sandbox_schema):
        theirs = reference.type_map.get(ours.name)
        if theirs is None or type(theirs) is not type(ours):
            problems.append(f"{ours.name}: not a {type(ours).__name__} in the reference")
            continue
        if isinstance(ours, GraphQLEnumType):
            assert isinstance(theirs, GraphQLEnumType)
            if set(ours.values) != set(theirs.values):
                problems.append(f"{ours.name}: enum values differ")
        elif isinstance(ours, GraphQLObjectType | GraphQLInputObjectType):
            assert isinstance(theirs, GraphQLObjectType | GraphQLInputObjectType)
            for field_name, field in ours.fields.items():
                other = theirs.fields.get(field_name)
                if other is None:
                    problems.append(f"{ours.name}.{field_name}: not in the reference")
                    continue
                if str(field.type) != str(other.type):
                    problems.append(f"{ours.name}.{field_name}: {field.type} != {other.type}")
                if get_named_type(field.type).name != get_named_type(other.type).name:
                    problems.append(f"{ours.name}.{field_name}: named type differs")
                if isinstance(ours, GraphQLInputObjectType):  # type and default value, e.g. `status: X = DRAFT`
                    mine, wave = print_input_value(field_name, field), print_input_value(field_name, other)
                    if mine != wave:
                        problems.append(f"{ours.name}.{field_name}: {mine} != {wave}")
                for arg_name, arg in getattr(field, "args", {}).items():
                    other_arg = getattr(other, "args", {}).get(arg_name)
                    mine = print_input_value(arg_name, arg)
                    wave = print_input_value(arg_name, other_arg) if other_arg is not None else "(absent)"
                    if mine != wave:
                        problems.append(f"{ours.name}.{field_name}({mine}): reference has {wave}")
    assert problems == []


def test_deliberate_omissions_are_absent(sandbox_schema: GraphQLSchema) -> None:
    for type_name, field_name in OMITTED_FIELDS:
        named = sandbox_schema.type_map[type_name]
        assert isinstance(named, GraphQLInputObjectType)
        assert field_name not in named.fields


def test_committed_sdl_matches_the_generator() -> None:
    expected = build_sdl(load_reference_introspection())
    assert SCHEMA_PATH.read_text(encoding="utf-8") == expected, "regenerate: python -m sandboxes.wave.build_schema"


def test_vendored_dumps_are_the_files_source_md_describes() -> None:
    assert check_vendored_dumps() == [], "edit nothing in sandboxes/wave/reference/ by hand: make refresh-wave-schema"
