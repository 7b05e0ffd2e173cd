"""DKIM key pairs (RFC 6376 §3.3.3, RSA) and the DNS TXT record that publishes one (§3.6.1)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class DkimKey:
    """A generated pair: the private key as PEM (PKCS#1, which dkimpy reads) and the public
    key's `v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>` TXT value."""

    private_pem: bytes
    public_txt: str


def generate(bits: int = 2048) -> DkimKey:
    """A new RSA key pair of `bits` (1024 to 4096; 2048 is what providers expect today)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(private_pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public_der).decode()}")


def public_txt_of(private_pem: bytes) -> str:
    """The TXT value of an existing PEM RSA private key."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public_der).decode()}"


def dns_record(selector: str, domain: str, txt: str) -> str:
    """The zone-file line: `<selector>._domainkey.<domain>. IN TXT "…" "…"`, split into
    strings of at most 255 characters (RFC 1035 §3.3.14; resolvers join them)."""
    chunks = " ".join(f'"{txt[i : i + 255]}"' for i in range(0, len(txt), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"
