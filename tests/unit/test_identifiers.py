"""Identifier quoting, literals and 63-byte truncation, as the Go connector renders them."""

from __future__ import annotations

import pytest

from materialize_postgres.identifiers import MAX_IDENTIFIER_BYTES, is_simple, literal, quote, quote_path, truncate
from materialize_postgres.reserved_words import RESERVED_WORDS


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Examples from the Go connector's recorded DDL.
        ("key1", "key1"),
        ("key!binary", '"key!binary"'),
        ("array", '"array"'),
        ("binary", '"binary"'),
        ("integerGt64Bit", '"integerGt64Bit"'),
        ("nonAsciiκόσμε", '"nonAsciiκόσμε"'),
        ('binary"With"Quote', '"binary""With""Quote"'),
        ("field_with_projection", "field_with_projection"),
        ("flow_published_at", "flow_published_at"),
        ("_meta/op", '"_meta/op"'),
        ("_id", "_id"),
        ("123", '"123"'),
        ("123startsWithDigits", '"123startsWithDigits"'),
        ("$dollar$signs", '"$dollar$signs"'),
        ("a\"string`with`quote'characters", '"a""string`with`quote\'characters"'),
        ("testing (%s)", '"testing (%s)"'),
        (" ,;{}().- problematicKey � 𐀀 嶲 ", '" ,;{}().- problematicKey � 𐀀 嶲 "'),
        ("FIELDWITHDIFFERENTCAPS", '"FIELDWITHDIFFERENTCAPS"'),
        ("fieldwithdifferentcaps", "fieldwithdifferentcaps"),
        ("public", '"public"'),  # reserved
        ("select", '"select"'),
        ("to", '"to"'),
        ("user", '"user"'),
        ("κόσμε", "κόσμε"),  # Unicode lowercase letters are simple
        ("über_straße", "über_straße"),
        ("_", "_"),
        ("a1_", "a1_"),
        ("a-b", '"a-b"'),
        ("a b", '"a b"'),
        ("", '""'),
    ],
)
def test_quote(name: str, expected: str) -> None:
    assert quote(name) == expected


def test_reserved_words_are_quoted_whatever_their_case() -> None:
    for word in ("all", "and", "table", "order", "limit", "true", "null", "column"):
        assert word in RESERVED_WORDS
        assert quote(word) == f'"{word}"'
        assert quote(word.upper()) == f'"{word.upper()}"'


def test_is_simple() -> None:
    assert is_simple("abc_12")
    assert is_simple("_x")
    assert is_simple("κόσμε")
    assert not is_simple("1abc")  # digits may not lead
    assert not is_simple("Abc")
    assert not is_simple("ab.c")
    assert not is_simple("")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (["public", "migration_test"], '"public".migration_test'),
        (["path", "to", "checkpoints"], 'path."to".checkpoints'),
        (["key_value"], "key_value"),
        (["My Schema", "Orders"], '"My Schema"."Orders"'),
        (["public", "flow_checkpoints_v1"], '"public".flow_checkpoints_v1'),
    ],
)
def test_quote_path(path: list[str], expected: str) -> None:
    assert quote_path(path) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "'plain'"),
        ("it's", "'it''s'"),
        ("''", "''''''"),
        ('a"b', "'a\"b'"),
        ("line\nbreak", "'line\nbreak'"),
        ("back\\slash", "'back\\slash'"),
    ],
)
def test_literal(text: str, expected: str) -> None:
    assert literal(text) == expected


def test_truncate_keeps_short_names() -> None:
    assert truncate("short") == "short"
    exact = "a" * MAX_IDENTIFIER_BYTES
    assert truncate(exact) == exact


def test_truncate_cuts_at_63_bytes() -> None:
    assert truncate("a" * 70) == "a" * 63
    assert len(truncate("x" * 63 + "_first").encode()) == 63


def test_truncate_never_splits_a_character() -> None:
    name = "é" * 40  # 2 bytes each: 63 bytes would cut the 32nd in half
    assert truncate(name) == "é" * 31
    assert truncate("a" + "𐀀" * 20) == "a" + "𐀀" * 15  # 4-byte characters: 1 + 60 bytes
    assert truncate("abc", 2) == "ab"


def test_names_that_collide_after_truncation() -> None:
    a, b = "x" * 63 + "_first", "x" * 63 + "_second"
    assert a != b
    assert truncate(a) == truncate(b)
