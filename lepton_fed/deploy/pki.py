"""Keys and certificates for a federation (``cryptography`` only; no openssl calls).

* The CA is a self-signed ECDSA P-384 certificate (``CA:TRUE, pathlen:0``, key usage
  certificate/CRL signing only). It signs exactly one leaf: the SuperLink's TLS
  certificate (ECDSA P-256, ``serverAuth`` only, one SAN per host name or IP given).
  Nodes and the ``flwr`` CLI trust this CA and nothing else for the SuperLink.
* Node authentication keys are ECDSA P-384 in OpenSSH format, the format Flower's
  ``flower-supernode --auth-supernode-private-key`` reads and ``flwr supernode register``
  accepts (``ssh-keygen -t ecdsa -b 384`` writes the same).
* Secure-aggregation identity keys and the federation signing key are Ed25519, PKCS#8
  PEM (the format :mod:`lepton_fed.serving.signing` loads).

Private keys are created with ``O_EXCL`` and mode 0600: an existing file is never
overwritten, and no private key is ever printed or logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lepton_fed.deploy.layout import DeployError

__all__ = [
    "cert_pem",
    "check_host",
    "ed25519_raw_public",
    "make_ca",
    "make_server_cert",
    "new_auth_key",
    "new_ed25519_key",
    "openssh_public",
    "write_private",
    "write_public",
]

_DNS_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def check_host(host: str) -> x509.GeneralName:
    """The SAN entry for ``host`` (an IP address or a DNS name); DeployError if neither."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _DNS_RE.match(host):
        raise DeployError(
            f"SuperLink host {host!r} is neither an IP address nor a DNS name "
            "(no scheme, port or wildcard: e.g. fl.example.org or 10.0.0.5)"
        )
    return x509.DNSName(host.lower())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(
    common_name: str, *, valid_days: int = 3650
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh CA key (P-384) and its self-signed certificate."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: Sequence[str],
    *,
    valid_days: int = 825,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS server key (P-256) and certificate for ``hosts``, signed by the CA."""
    if not hosts:
        raise DeployError("at least one SuperLink host is needed for the certificate")
    sans = [check_host(h) for h in dict.fromkeys(hosts)]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def new_auth_key() -> ec.EllipticCurvePrivateKey:
    """A node-authentication key (ECDSA P-384)."""
    return ec.generate_private_key(ec.SECP384R1())


def new_ed25519_key() -> Ed25519PrivateKey:
    """A secure-aggregation identity key or a federation signing key."""
    return Ed25519PrivateKey.generate()


def openssh_public(key: ec.EllipticCurvePrivateKey, comment: str) -> bytes:
    """``ecdsa-sha2-nistp384 AAAA... comment`` (what ``flwr supernode register`` reads)."""
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return line + b" " + comment.encode("ascii") + b"\n"


def ed25519_raw_public(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw public-key bytes."""
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def write_private(path: Path, key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey, *, openssh: bool = False) -> None:
    """Write an unencrypted private key with mode 0600; refuse to overwrite a file."""
    fmt = serialization.PrivateFormat.OpenSSH if openssh else serialization.PrivateFormat.PKCS8
    data = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DeployError(f"refusing to overwrite the existing key {path}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # in case a umask widened nothing but an ACL did


def write_public(path: Path, data: bytes) -> None:
    """Write public material (certificates, public keys, JSON) with mode 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM bytes of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)
