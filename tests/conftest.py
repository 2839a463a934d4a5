"""Shared fixtures: the conformance corpus location and the --update-goldens switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CONFORMANCE = ROOT.parent / "shared" / "conformance"


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true",
                     help="Rewrite golden files under fixtures/ from the current code.")


@pytest.fixture
def update_goldens(request) -> bool:
    return request.config.getoption("--update-goldens")


@pytest.fixture(scope="session")
def conformance() -> Path:
    if not (CONFORMANCE / "manifest.json").is_file():
        pytest.skip(f"conformance corpus not found at {CONFORMANCE} (it lives beside the checkout as ../shared/conformance)")
    return CONFORMANCE


def official(conformance_dir: Path, template_name: str) -> tuple[str, dict]:
    """The official template text and its manifest entry (bos/eos to render with)."""
    manifest = json.loads((conformance_dir / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["name"] == template_name)
    return (conformance_dir / "templates" / f"{template_name}.jinja").read_text(), entry
