"""Every __all__ is a sorted list of strings that resolve (order: ruff RUF022); the wheel
ships every package of the source tree, under lepton_fed only."""

import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest

import lepton_fed
import lepton_fed.simulations
import lepton_fed.strategies

REPO = Path(__file__).resolve().parents[1]


def _isort_key(n: str) -> tuple[int, str]:
    """ruff RUF022's "isort-style" order: CONSTANTS, then Classes, then functions."""
    return (0 if n.isupper() and len(n) > 1 else 1 if n[:1].isupper() else 2, n)


def _modules():
    # lepton_fed.strategies / .simulations are mapped from top-level folders, which an
    # editable install's lepton_fed.__path__ does not list: walk them explicitly.
    for pkg in (lepton_fed, lepton_fed.simulations, lepton_fed.strategies):
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
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_mapped_packages_resolve_to_the_top_level_folders(tmp_path):
    """strategies/ and simulations/ stay at the repository's top level but are imported as
    lepton_fed.strategies / lepton_fed.simulations; nothing imports the generic top-level names
    (run outside the repository, where those names would not resolve)."""
    import subprocess
    import sys

    code = (
        "import sys, importlib, pathlib, lepton_fed.cli.main, lepton_fed.simulations.run\n"
        "from lepton_fed.config.paths import conf_dir\n"
        "for f in sorted((conf_dir() / 'strategy').glob('*.yaml')):\n"
        "    t = next(l.split(':', 1)[1].strip() for l in f.read_text().splitlines()\n"
        "             if l.startswith('_target_:'))\n"
        "    m, _, c = t.rpartition('.')\n"
        "    getattr(importlib.import_module(m), c)\n"
        "for n in ('strategies', 'simulations'):\n"
        "    print(pathlib.Path(importlib.import_module('lepton_fed.' + n).__file__).parent.name)\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('strategies', 'simulations')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["strategies", "simulations", "[]"], out.stdout


def test_pyproject_lists_every_package_of_the_source_tree():
    """[tool.setuptools] packages is an explicit list (package-dir mappings rule out
    `find`), so a new sub-package or conf group left off it would be missing from the wheel."""
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]
    mapped = setuptools_cfg["package-dir"]
    expected = {"lepton_fed"}
    expected |= {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "lepton_fed").rglob("__init__.py")
    }
    for name, folder in mapped.items():
        root = REPO / folder
        expected.add(name)
        if name == "lepton_fed.conf":  # data-only: each group folder holding YAML
            expected |= {
                f"{name}.{d.name}"
                for d in root.iterdir()
                if d.is_dir() and d.name != "local" and any(d.glob("*.yaml"))
            }
        else:
            expected |= {
                f"{name}." + ".".join(p.parent.relative_to(root).parts)
                for p in root.rglob("*/__init__.py")
            }
    assert mapped == {
        "lepton_fed.conf": "conf",
        "lepton_fed.simulations": "simulations",
        "lepton_fed.strategies": "strategies",
    }
    listed = set(setuptools_cfg["packages"])
    assert listed == expected, (
        f"pyproject [tool.setuptools] packages: add {sorted(expected - listed)}, "
        f"remove {sorted(listed - expected)}"
    )
    data = setuptools_cfg["package-data"]
    conf = [
        n
        for n in expected
        if n == "lepton_fed.conf" or n.startswith("lepton_fed.conf.")
    ]
    missing = [n for n in conf if n not in data]
    assert not missing, (
        f"conf groups without package-data (their YAML would not ship): {missing}"
    )


def test_root_import_is_light_and_the_api_resolves_lazily():
    """``import lepton_fed`` loads none of the heavy stacks; each root name loads its own
    module on first use and is the object its home module defines."""
    import subprocess
    import sys

    code = (
        "import sys, lepton_fed\n"
        "heavy = ('torch', 'flwr', 'hydra', 'onnx', 'onnxruntime', 'opacus', 'omegaconf')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "lepton_fed.NodePolicy\n"
        "print('torch' in sys.modules, 'flwr' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["[]", "False False"], out.stdout
    from lepton_fed import _LAZY

    assert set(_LAZY) | {n for n in lepton_fed.__all__ if n not in _LAZY} == set(
        lepton_fed.__all__
    )
    for name, module in _LAZY.items():
        assert getattr(lepton_fed, name) is getattr(
            importlib.import_module(module), name
        )
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lepton_fed.nope  # noqa: B018
