"""Ed25519 signing and verification of serving artifacts.

An artifact directory holds its files, ``manifest.json`` (which lists the sha256 of
every other file), ``manifest.sig`` and ``signer.pub``. The signature covers the
*canonical* JSON bytes of the manifest (:func:`canonical_json`): keys sorted, no
whitespace, UTF-8, no NaN/Infinity. Re-indenting ``manifest.json`` therefore keeps
the signature valid; changing any value does not.

What verification proves depends on the key it is checked against:

* with a trusted public key (the federation's, from ``lepton-fed federation init``),
  that the holder of the matching private key produced these exact files;
* without one, only that the files match the key embedded in the artifact
  (``signer.pub``): this catches corruption and naive edits, not a forger who re-signs
  with their own key. :class:`Verification` says which case applied.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_fed.errors import ArtifactError, ConfigError

__all__ = [
    "MANIFEST",
    "PUBLIC_KEY",
    "SIGNATURE",
    "Verification",
    "canonical_json",
    "default_key_path",
    "key_fingerprint",
    "load_or_create_signing_key",
    "load_public_key",
    "public_key_pem",
    "read_manifest",
    "sha256_file",
    "sign_manifest",
    "verify_artifact",
]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "signer.pub"
SIG_FORMAT = 1


def canonical_json(obj: Any) -> bytes:
    """The canonical bytes that get signed: sorted keys, compact, UTF-8, finite floats.

    Raises:
        ValueError: ``obj`` holds NaN/Infinity or a non-JSON type.
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_key_path() -> Path:
    """``$LEPTON_FED_HOME/signing_key.pem``, else ``~/.lepton-fed/signing_key.pem``."""
    home = os.environ.get("LEPTON_FED_HOME")
    base = Path(home) if home else Path.home() / ".lepton-fed"
    return base / "signing_key.pem"


def key_fingerprint(public_key: Any) -> str:
    """``sha256:`` + hex digest of the raw 32-byte Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _load_private_pem(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"signing key {path} is not an unencrypted PEM private key: {e}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"signing key {path} is a {type(key).__name__}; an Ed25519 key is required"
        )
    return key


def load_or_create_signing_key(path: str | os.PathLike[str] | None = None) -> Any:
    """Load the Ed25519 signing key, creating a local one when none is configured.

    Args:
        path: a PEM private key (e.g. the federation signing key). ``None`` uses
            :func:`default_key_path`, generating a fresh key there (file mode 0600,
            directory 0700) the first time.

    Returns:
        An ``Ed25519PrivateKey``.

    Raises:
        ConfigError: an explicit ``path`` that does not exist, is not PEM, or is not
            Ed25519.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"signing key {p} does not exist")
        return _load_private_pem(p)
    p = default_key_path()
    if p.is_file():
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            warnings.warn(
                f"signing key {p} is readable by others (mode {mode:o}); chmod 600 it",
                stacklevel=2,
            )
        return _load_private_pem(p)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile
        return _load_private_pem(p)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_key_pem(public_key: Any) -> bytes:
    """SubjectPublicKeyInfo PEM bytes of a public key."""
    from cryptography.hazmat.primitives import serialization

    return bytes(
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_public_key(source: Any) -> Any:
    """An Ed25519 public key from a key object, PEM bytes, or a PEM file path.

    A private key (object or PEM) is accepted too; its public half is used.

    Raises:
        ArtifactError: unreadable, not PEM, or not Ed25519.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, Ed25519PrivateKey):
        return source.public_key()
    where = "the given key"
    if isinstance(source, str | os.PathLike):
        where = str(source)
        try:
            source = Path(source).expanduser().read_bytes()
        except OSError as e:
            raise ArtifactError(f"cannot read public key {where}: {e}") from None
    try:
        key: Any = serialization.load_pem_public_key(bytes(source))
    except ValueError:
        try:
            key = serialization.load_pem_private_key(bytes(source), None).public_key()
        except (ValueError, TypeError) as e:
            raise ArtifactError(f"{where} is not a PEM Ed25519 key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ArtifactError(f"{where} is a {type(key).__name__}, not Ed25519")
    return key


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise ArtifactError(f"{MANIFEST} repeats key(s) {sorted(dup)}")
    return dict(pairs)


def _reject_constant(name: str) -> Any:
    raise ArtifactError(f"{MANIFEST} holds a non-JSON number {name}")


def read_manifest(artifact_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse ``manifest.json`` strictly (no duplicate keys, no NaN). Not verified.

    Raises:
        ArtifactError: missing or malformed.
    """
    p = Path(artifact_dir) / MANIFEST
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(
            f"{artifact_dir} is not an artifact: {MANIFEST} is missing"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot read {p}: {e}") from None
    try:
        obj = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("files"), dict):
        raise ArtifactError(f"{p} has no 'files' table")
    return obj


def sign_manifest(
    artifact_dir: str | os.PathLike[str], manifest: dict[str, Any], private_key: Any
) -> None:
    """Write ``manifest.json`` (indented) and ``manifest.sig``; embed ``signer.pub`` first.

    ``manifest["files"]`` must already hold the sha256 of every file except
    ``manifest.json`` and ``manifest.sig``; this function adds ``signer.pub`` to it.
    """
    d = Path(artifact_dir)
    public = private_key.public_key()
    (d / PUBLIC_KEY).write_bytes(public_key_pem(public))
    pub_path = d / PUBLIC_KEY
    manifest = dict(manifest)
    manifest["files"] = dict(manifest["files"])
    manifest["files"][PUBLIC_KEY] = {
        "sha256": sha256_file(pub_path),
        "bytes": pub_path.stat().st_size,
    }
    manifest["signer"] = {
        "algorithm": "Ed25519",
        "key_fingerprint": key_fingerprint(public),
    }
    body = canonical_json(manifest)
    (d / MANIFEST).write_text(
        json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    sig = {
        "format": SIG_FORMAT,
        "algorithm": "Ed25519",
        "key_fingerprint": key_fingerprint(public),
        "signature": base64.b64encode(private_key.sign(body)).decode("ascii"),
    }
    (d / SIGNATURE).write_text(json.dumps(sig, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Verification:
    """A successful verification.

    Attributes:
        manifest: the verified manifest.
        key_fingerprint: fingerprint of the key the signature was checked against.
        trusted: True when checked against a caller-supplied trusted key; False when
            only against the artifact's own ``signer.pub``.
    """

    manifest: dict[str, Any]
    key_fingerprint: str
    trusted: bool

    @property
    def message(self) -> str:
        """A one-line human summary."""
        if self.trusted:
            return f"OK: signature verified with trusted key {self.key_fingerprint}"
        return (
            f"OK: signature verified with the artifact's embedded {PUBLIC_KEY} "
            f"({self.key_fingerprint}); this proves integrity, not origin -- pass a "
            f"trusted public key to check who signed it"
        )


def _safe_name(name: str) -> bool:
    return (
        bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
    )


def verify_artifact(
    artifact_dir: str | os.PathLike[str], trusted_public_key: Any = None
) -> Verification:
    """Check every hash and the signature of an artifact; fail closed.

    Args:
        artifact_dir: the artifact directory.
        trusted_public_key: an Ed25519 public key (object, PEM bytes or PEM path). If
            ``None``, the embedded ``signer.pub`` is used and the result says so.

    Returns:
        A :class:`Verification`.

    Raises:
        ArtifactError: a missing, extra or altered file, a path outside the directory,
            a malformed manifest or signature file, or a signature that does not verify.
    """
    from cryptography.exceptions import InvalidSignature

    d = Path(artifact_dir)
    if not d.is_dir():
        raise ArtifactError(f"{d} is not a directory")
    manifest = read_manifest(d)
    files = manifest["files"]
    for name in (SIGNATURE, PUBLIC_KEY):
        if not (d / name).is_file():
            raise ArtifactError(f"{d} is not a signed artifact: {name} is missing")
    if PUBLIC_KEY not in files:
        raise ArtifactError(f"{MANIFEST} does not list {PUBLIC_KEY}")
    # The signature first: a forged manifest must not steer which files we read.
    try:
        sig = json.loads((d / SIGNATURE).read_text(encoding="utf-8"))
        if sig.get("format") != SIG_FORMAT or sig.get("algorithm") != "Ed25519":
            raise ArtifactError(
                f"{SIGNATURE}: unsupported format {sig.get('format')!r} / "
                f"algorithm {sig.get('algorithm')!r}"
            )
        signature = base64.b64decode(sig["signature"], validate=True)
    except ArtifactError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise ArtifactError(f"{SIGNATURE} is malformed: {e}") from None
    trusted = trusted_public_key is not None
    key = load_public_key(trusted_public_key if trusted else d / PUBLIC_KEY)
    try:
        key.verify(signature, canonical_json(manifest))
    except InvalidSignature:
        whom = "the trusted key" if trusted else f"the embedded {PUBLIC_KEY}"
        raise ArtifactError(
            f"signature mismatch: {MANIFEST} was not signed by {whom} "
            f"({key_fingerprint(key)}) or was modified after signing"
        ) from None
    except ValueError as e:
        raise ArtifactError(f"cannot verify signature: {e}") from None
    for name, entry in files.items():
        if not _safe_name(name):
            raise ArtifactError(f"{MANIFEST} lists an unsafe path {name!r}")
        p = d / name
        if not p.is_file():
            raise ArtifactError(f"missing file: {name} (listed in {MANIFEST})")
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        actual = sha256_file(p)
        if actual != expected:
            raise ArtifactError(
                f"hash mismatch: {name} has sha256 {actual}, {MANIFEST} says {expected}"
            )
    listed = set(files) | {MANIFEST, SIGNATURE}
    extra = sorted(p.name for p in d.iterdir() if p.name not in listed)
    if extra:
        raise ArtifactError(
            f"unexpected file(s) in artifact not covered by {MANIFEST}: {extra}"
        )
    return Verification(manifest, key_fingerprint(key), trusted)
