"""A private certificate authority for tests: a CA, a server certificate and a client certificate.

`Pki.create(directory, server_names=[...])` writes PEM files (X.509 v3, P-256, valid from a day
ago for 30 days): rustls, which the Temporal SDK's core uses, refuses X.509 v1 certificates, which
`openssl x509 -req` makes unless told otherwise (FACTS.md, "Temporal behind TLS / mTLS").
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_FOR = datetime.timedelta(days=30)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


@dataclass(frozen=True)
class Pki:
    """PEM files in one directory: `ca.pem`; `server.pem`/`server.key` for `server_names`
    (serverAuth); `client.pem`/`client.key` (clientAuth, CN `client_name`)."""

    directory: Path
    ca_pem: Path
    server_pem: Path
    server_key: Path
    client_pem: Path
    client_key: Path

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        server_names: Sequence[str] = ("localhost", "127.0.0.1"),
        client_name: str = "campaign-engine",
    ) -> Pki:
        """Makes a new CA (its key is thrown away) and the two certificates it signs; writes
        them under `directory` (created if needed). Server names that parse as IP addresses
        become IP SANs, the others DNS SANs."""
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"campaign-engine test CA {directory.name}")]
        )
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + _VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )

        def issue(
            common_name: str, usage: x509.ObjectIdentifier, names: Sequence[str]
        ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + _VALID_FOR)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(ca=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                    critical=False,
                )
            )
            if names:
                builder = builder.add_extension(_san(names), critical=False)
            return builder.sign(ca_key, hashes.SHA256()), key

        server, server_key = issue(server_names[0], ExtendedKeyUsageOID.SERVER_AUTH, server_names)
        client, client_key = issue(client_name, ExtendedKeyUsageOID.CLIENT_AUTH, ())
        pki = cls(
            directory=directory,
            ca_pem=directory / "ca.pem",
            server_pem=directory / "server.pem",
            server_key=directory / "server.key",
            client_pem=directory / "client.pem",
            client_key=directory / "client.key",
        )
        pki.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        pki.server_pem.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        _write_key(pki.server_key, server_key)
        pki.client_pem.write_bytes(client.public_bytes(serialization.Encoding.PEM))
        _write_key(pki.client_key, client_key)
        return pki
