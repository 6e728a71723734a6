"""docs/mappings.md is what the code's field tables say."""

from __future__ import annotations

from pathlib import Path

from shared.mapping.docs import render

DOC = Path(__file__).resolve().parents[3] / "docs" / "mappings.md"


def test_mapping_document_matches_the_code() -> None:
    assert DOC.read_text() == render(), "run: python -m shared.mapping.docs > docs/mappings.md"
