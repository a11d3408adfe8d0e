"""The test cluster's PKI: a CA, the API server's serving certificate, an admin client certificate
(system:masters) and the service-account signing key pair, made fresh for every control plane.

Keys are EC P-256 (RSA for service accounts, which kube-apiserver signs tokens with); everything is
valid from five minutes ago for 30 days, and private keys are written 0600."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signing_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """A certificate valid from five minutes ago for 30 days (a test cluster lives minutes)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _leaf(
    ca_name: x509.Name, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime, cn: str, org: str | None, server: bool
) -> tuple[bytes, bytes]:
    """A serving certificate for loopback (and the service IP), or a client certificate; PEM cert and key."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    extensions: list[tuple[x509.ExtensionType, bool]] = [(x509.ExtendedKeyUsage([usage]), False)]
    if server:
        names = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ]
        extensions.append((x509.SubjectAlternativeName(names), False))
    cert = _certificate(x509.Name(attrs), ca_name, key.public_key(), ca_key, now, extensions)
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_pki(pki: Path) -> None:
    """CA, API server serving cert, admin client cert (system:masters), service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qbo-operator test CA")])
    ca_extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
    ]
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, now, ca_extensions)
    _write(pki / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    _write(pki / "ca.key", _key_pem(ca_key), private=True)
    for stem, cn, org, server in (
        ("apiserver", "kube-apiserver", None, True),
        ("admin", "admin", "system:masters", False),
    ):
        crt, key = _leaf(ca_name, ca_key, now, cn, org, server)
        _write(pki / f"{stem}.crt", crt)
        _write(pki / f"{stem}.key", key, private=True)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki / "sa.key", _key_pem(sa_key), private=True)
    _write(
        pki / "sa.pub",
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
