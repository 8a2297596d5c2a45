"""Decide whether a node may run the app package (FAB) a SuperLink sent it. Pure.

Under Flower's deployment runtime the SuperLink ships a FAB (a zip of the app's files)
to every SuperNode, and Flower's ``flwr-clientapp`` installs it and imports the
``clientapp`` component it names. Whoever controls the SuperLink can therefore run
any code on every node. A lepton-fed node never installs a FAB; it accepts one only if

* **pinned**: the FAB names ``lepton_fed.client.app:app`` as its ClientApp and carries no
  code (only ``pyproject.toml``, Flower's ``.info/CONTENT`` manifest, and ``*.md`` /
  ``LICENSE`` text). The node then runs the ClientApp of the lepton-fed *installed on
  the node*; the FAB contributes nothing but the run config defaults; or
* **allowlisted**: the sha256 of the FAB's exact bytes is one the node operator listed
  (``--allow-fab-hash``); that FAB's own code runs, in a separate process.

Everything else is **refused** before any of it is imported. The hash is computed here
from the bytes received, never taken from the SuperLink's claim.
"""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

__all__ = ["PINNED_CLIENTAPP", "FabVerdict", "check_fab", "normalize_hash"]

PINNED_CLIENTAPP = "lepton_fed.client.app:app"
_TEXT_SUFFIXES = (".md",)
_TEXT_NAMES = ("LICENSE",)
_MAX_ENTRIES = 64


@dataclass(frozen=True)
class FabVerdict:
    """What to do with a FAB: ``mode`` is ``pinned``, ``allowlisted`` or ``refused``."""

    sha256: str
    mode: Literal["pinned", "allowlisted", "refused"]
    reason: str
    serverapp: str = ""

    @property
    def accepted(self) -> bool:
        """True when the FAB may run (``pinned`` or ``allowlisted``), False when ``refused``."""
        return self.mode != "refused"


def normalize_hash(h: str) -> str:
    """A lower-case 64-hex sha256 (``sha256:`` prefix allowed); ValueError otherwise."""
    v = h.strip().lower().removeprefix("sha256:")
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise ValueError(f"{h!r} is not a sha256 hex digest (64 hex characters)")
    return v


def check_fab(content: bytes, *, allow_hashes: Collection[str] = ()) -> FabVerdict:
    """The verdict for FAB bytes ``content`` (see the module docstring)."""
    digest = hashlib.sha256(content).hexdigest()
    if digest in {normalize_hash(h) for h in allow_hashes}:
        return FabVerdict(digest, "allowlisted", "its sha256 is on this node's allowlist")

    def refuse(why: str) -> FabVerdict:
        return FabVerdict(digest, "refused", why)

    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            infos = z.infolist()
            if len(infos) > _MAX_ENTRIES:
                return refuse(f"it has {len(infos)} files; the pinned app package has 2")
            names = [i.filename for i in infos if not i.is_dir()]
            extra = sorted(n for n in names if not _is_allowed_file(n))
            if extra:
                return refuse(f"it carries files other than the app description: {extra[:8]}")
            if "pyproject.toml" not in names:
                return refuse("it has no pyproject.toml")
            raw = z.read("pyproject.toml")
    except (zipfile.BadZipFile, OSError, RuntimeError) as e:
        return refuse(f"it is not a readable zip archive ({e})")
    try:
        components = tomllib.loads(raw.decode("utf-8"))["tool"]["flwr"]["app"]["components"]
        clientapp = str(components.get("clientapp", ""))
        serverapp = str(components.get("serverapp", ""))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as e:
        return refuse(f"its pyproject.toml has no readable [tool.flwr.app.components] ({e})")
    if clientapp != PINNED_CLIENTAPP:
        return refuse(f"its ClientApp is {clientapp!r}, not {PINNED_CLIENTAPP!r}")
    return FabVerdict(digest, "pinned", "names the installed lepton-fed ClientApp and carries no code",
                      serverapp=serverapp)


def _is_allowed_file(name: str) -> bool:
    if name in ("pyproject.toml", ".info/CONTENT"):
        return True
    if "/" in name or name.startswith("."):
        return False
    return name.endswith(_TEXT_SUFFIXES) or name in _TEXT_NAMES
