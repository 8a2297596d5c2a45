"""Every __all__ is a sorted list of strings that resolve (order: ruff RUF022)."""

import importlib
import pkgutil

import pytest

import lepton_fed
import strategies


def _isort_key(n: str) -> tuple[int, str]:
    """ruff RUF022's "isort-style" order: CONSTANTS, then Classes, then functions."""
    return (0 if n.isupper() and len(n) > 1 else 1 if n[:1].isupper() else 2, n)


def _modules():
    for pkg in (lepton_fed, strategies):
        yield pkg.__name__
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            yield m.name


@pytest.mark.parametrize("name", sorted(set(_modules())))
def test_all_sorted_and_resolves(name):
    try:
        mod = importlib.import_module(name)
    except ImportError as exc:  # optional extra not installed
        pytest.skip(str(exc))
    names = getattr(mod, "__all__", None)
    if names is None:
        return
    assert all(isinstance(n, str) for n in names)
    assert list(names) == sorted(names, key=_isort_key), f"{name}.__all__ is not sorted"
    for n in names:
        assert hasattr(mod, n), f"{name}.__all__ lists missing {n}"


def test_import_has_no_side_effects(monkeypatch):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLWR", "RAY"))}
    code = "import os, lepton_fed; print(sorted(k for k in os.environ if k.startswith(('FLWR','RAY'))))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr
