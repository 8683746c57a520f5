"""A throwaway X.509 chain for C2PA tests: root CA -> intermediate CA -> end-entity signer.

C2PA validators want the signing certificate to be an end-entity (``CA:FALSE``,
``keyUsage=digitalSignature``, an accepted extended key usage such as
``emailProtection``) issued by an intermediate, never the root itself; a self-signed
certificate signs but never validates as trusted. ``make_chain`` writes such a chain (ECDSA
P-256, for ``es256``) into a folder; the reader trusts it when given ``root_pem`` as a
user anchor. Also writes the odd cases the tests need: a self-signed end-entity
(``self_signed_pem`` + ``key_pem``) and an unrelated key (``other_key_pem``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ChainPaths:
    root_pem: Path  # the root CA certificate: the trust anchor
    cert_chain_pem: Path  # end-entity certificate followed by the intermediate
    key_pem: Path  # the end-entity's private key (PKCS#8 PEM)
    self_signed_pem: Path  # a self-signed end-entity certificate over key_pem's key
    other_key_pem: Path  # a private key that matches no certificate here


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "framefold tests"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    ])


def _cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, path_length: int | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)
    else:
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    builder = builder.add_extension(usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_chain(tmp_dir: Path) -> ChainPaths:
    """Write a fresh root -> intermediate -> end-entity chain (ECDSA P-256) into ``tmp_dir``."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    root_key, inter_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    root_name, inter_name = _name("framefold test root CA"), _name("framefold test intermediate CA")
    leaf_name = _name("framefold test signer")
    root = _cert(root_name, root_key, root_name, root_key, ca=True, path_length=1)
    inter = _cert(inter_name, inter_key, root_name, root_key, ca=True, path_length=0)
    leaf = _cert(leaf_name, leaf_key, inter_name, inter_key, ca=False)
    self_signed = _cert(leaf_name, leaf_key, leaf_name, leaf_key, ca=False)

    paths = ChainPaths(
        root_pem=tmp_dir / "root.pem",
        cert_chain_pem=tmp_dir / "chain.pem",
        key_pem=tmp_dir / "signer.key",
        self_signed_pem=tmp_dir / "self_signed.pem",
        other_key_pem=tmp_dir / "other.key",
    )
    paths.root_pem.write_bytes(_pem(root))
    paths.cert_chain_pem.write_bytes(_pem(leaf) + _pem(inter))
    paths.key_pem.write_bytes(_key_pem(leaf_key))
    paths.self_signed_pem.write_bytes(_pem(self_signed))
    paths.other_key_pem.write_bytes(_key_pem(other_key))
    return paths
