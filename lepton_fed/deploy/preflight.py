"""Checks ``lepton-fed node join`` runs before it starts anything: each names what is wrong.

* the bundle: every file present, the roster signed by ``federation.pub`` and listing
  this node with this bundle's auth key (a stale or mixed-up bundle is caught here);
* the data file and its label column, the policy file, the ledger directory;
* the SuperLink: TCP reachable (retried with backoff), then a TLS handshake that must
  verify against the bundle's CA for the host name dialled.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lepton_fed.deploy.layout import DeployError, NodeFiles

__all__ = ["check_bundle", "check_data", "check_dir", "check_superlink", "parse_address"]


def check_bundle(bundle: NodeFiles) -> dict[str, Any]:
    """The bundle's ``federation.json`` after checking every file and the roster."""
    from lepton_fed.secagg.provisioning import load_federation_public_key
    from lepton_fed.secagg.roster import RosterError, load_roster

    if not bundle.root.is_dir():
        raise DeployError(f"node bundle {bundle.root} does not exist")
    need = [bundle.federation_json, bundle.ca_cert, bundle.auth_key, bundle.auth_public_key,
            bundle.secagg_identity, bundle.roster, bundle.federation_public_key]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise DeployError(f"node bundle {bundle.root} lacks {', '.join(missing)}: "
                          "copy the whole nodes/<name>/ directory from the coordinator")
    if os.stat(bundle.auth_key).st_mode & 0o077 or os.stat(bundle.secagg_identity).st_mode & 0o077:
        raise DeployError(f"private keys in {bundle.root} are readable by other users: "
                          f"chmod 600 {bundle.auth_key} {bundle.secagg_identity}")
    info: dict[str, Any] = json.loads(bundle.federation_json.read_text(encoding="utf-8"))
    try:
        roster = load_roster(bundle.roster, load_federation_public_key(bundle.federation_public_key))
    except (RosterError, ValueError, OSError) as e:
        raise DeployError(f"{bundle.roster}: {e}") from None
    me = [m for m in roster.members if m.name == info.get("node")]
    if not me:
        raise DeployError(f"the roster does not list this node ({info.get('node')!r}); "
                          "the bundle is stale: ask the coordinator for a new one")
    mine = " ".join(bundle.auth_public_key.read_text(encoding="ascii").split()[:2])
    if me[0].attribute("auth_public_key") != mine:
        raise DeployError("the roster lists another auth key for this node (re-keyed?): "
                          "ask the coordinator for the current bundle")
    return info


def check_dir(path: Path, what: str) -> Path:
    """``path`` resolved, if it is an existing writable directory."""
    p = path.expanduser().resolve()
    if not p.is_dir():
        raise DeployError(f"{what} {p} does not exist (create it first)")
    if not os.access(p, os.W_OK):
        raise DeployError(f"{what} {p} is not writable by this user")
    return p


def check_data(path: Path, label: str) -> Path:
    """The data file resolved, if it exists and (for CSV/TSV/Parquet) has column ``label``."""
    p = path.expanduser().resolve()
    if not p.exists():
        raise DeployError(f"data file {p} does not exist")
    suffix = p.suffix.lower()
    columns: list[str] | None = None
    if p.is_file() and suffix in (".csv", ".tsv", ".txt"):
        with open(p, newline="", encoding="utf-8-sig") as f:
            columns = next(csv.reader(f, delimiter="\t" if suffix == ".tsv" else ","), [])
    elif p.is_file() and suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            columns = list(pq.read_schema(p).names)
        except ImportError:
            columns = None
    if columns is not None and label not in [c.strip() for c in columns]:
        shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
        raise DeployError(f"data file {p} has no column {label!r} (columns: {shown})")
    return p


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` / ``[v6]:port``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise DeployError(f"SuperLink address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def check_superlink(host: str, port: int, ca_file: Path, *, wait: float = 60.0,
                    say: Callable[[str], None] = print) -> None:
    """Return once ``host:port`` accepts TCP and presents a certificate the CA verifies.

    Raises:
        DeployError: still unreachable after ``wait`` seconds (retried with backoff), or
            the TLS certificate does not verify (wrong CA / wrong host name).
    """
    deadline, delay, tries, last = time.monotonic() + wait, 0.5, 0, ""
    while True:
        tries += 1
        try:
            sock = socket.create_connection((host, port), timeout=5)
            break
        except OSError as e:
            last = e.strerror or str(e)
            if time.monotonic() + delay > deadline:
                raise DeployError(
                    f"cannot reach the SuperLink at {host}:{port} ({last}) after {tries} tries "
                    f"over {wait:.0f}s: is `lepton-fed superlink` running there, and is TCP "
                    f"port {port} open from this host?") from None
            if tries == 1:
                say(f"SuperLink {host}:{port} not reachable yet ({last}); retrying ...")
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        with ctx.wrap_socket(sock, server_hostname=host):
            return
    except ssl.SSLCertVerificationError as e:
        raise DeployError(
            f"the SuperLink at {host}:{port} presented a certificate this bundle's CA "
            f"({ca_file}) does not accept: {e.verify_message}. Wrong bundle, wrong address, "
            "or not the federation's SuperLink") from None
    except (ssl.SSLError, OSError) as e:
        raise DeployError(f"TLS handshake with {host}:{port} failed: {e}") from None
    finally:
        sock.close()
