"""docs/api.md runs: every example in it is a doctest, executed in order (in-process,
tiny data), so the documented Python API cannot drift from the code."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_docs_api_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the export creates the local signing key under $LEPTON_FED_HOME: keep it here
    monkeypatch.setenv("LEPTON_FED_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(
        str(DOC),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
        report=True,
        verbose=False,
    )
    assert result.attempted > 40, f"only {result.attempted} examples found in {DOC}"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


def test_docs_api_covers_the_root_exports() -> None:
    import lepton_fed

    text = DOC.read_text()
    missing = [n for n in lepton_fed.__all__ if n != "__version__" and n not in text]
    assert not missing, f"docs/api.md does not mention {missing}"
