"""The node's FAB check on packages built by Flower's own ``flwr build`` code."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from lepton_fed.deploy.fab_check import PINNED_CLIENTAPP, check_fab, normalize_hash
from lepton_fed.deploy.submit import write_app


@pytest.fixture
def pinned(tmp_path) -> bytes:
    return build_fab_from_disk(write_app(tmp_path / "app"))


def _app_with(tmp_path: Path, files: dict[str, str], clientapp: str = PINNED_CLIENTAPP) -> bytes:
    app = write_app(tmp_path / "other")
    py = (app / "pyproject.toml").read_text().replace(PINNED_CLIENTAPP, clientapp)
    (app / "pyproject.toml").write_text(py)
    for name, text in files.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    return build_fab_from_disk(app)


def test_lepton_fed_run_package_is_pinned(pinned):
    v = check_fab(pinned)
    assert v.mode == "pinned" and v.accepted
    assert v.sha256 == hashlib.sha256(pinned).hexdigest()
    assert v.serverapp == "lepton_fed.server.app:app"
    with zipfile.ZipFile(io.BytesIO(pinned)) as z:
        assert sorted(z.namelist()) == [".info/CONTENT", "pyproject.toml"]


def test_a_package_with_code_is_refused_even_naming_our_clientapp(tmp_path):
    fab = _app_with(tmp_path, {"lepton_fed/client/app.py": "app = None\n"})
    v = check_fab(fab)
    assert v.mode == "refused" and "lepton_fed/client/app.py" in v.reason
    assert v.sha256 == hashlib.sha256(fab).hexdigest()


def test_another_clientapp_is_refused(tmp_path):
    v = check_fab(_app_with(tmp_path, {}, clientapp="evil.client:app"))
    assert v.mode == "refused" and "evil.client:app" in v.reason


def test_readme_is_allowed(tmp_path):
    assert check_fab(_app_with(tmp_path, {"README.md": "# hi\n"})).mode == "pinned"


def test_not_a_zip_is_refused():
    v = check_fab(b"not a zip")
    assert v.mode == "refused" and "zip" in v.reason


def test_allowlist_uses_the_hash_of_the_bytes(tmp_path, pinned):
    evil = _app_with(tmp_path, {"evil/client.py": "app = None\n"}, clientapp="evil.client:app")
    digest = hashlib.sha256(evil).hexdigest()
    assert check_fab(evil, allow_hashes=["sha256:" + digest.upper()]).mode == "allowlisted"
    assert check_fab(evil, allow_hashes=[hashlib.sha256(pinned).hexdigest()]).mode == "refused"
    assert check_fab(evil + b"\0", allow_hashes=[digest]).mode == "refused"  # one byte changed


@pytest.mark.parametrize("bad", ["abc", "g" * 64, ""])
def test_normalize_hash_rejects_non_digests(bad):
    with pytest.raises(ValueError, match="sha256"):
        normalize_hash(bad)
