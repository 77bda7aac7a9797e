"""A throwaway certificate authority for the sandbox's TLS port, made at start-up.

``DemoCA()`` makes a CA key and certificate in memory and signs a server certificate for
127.0.0.1, ::1 and localhost with it. Only the CA *certificate* (public) is ever written
out, for the demo's clients in other processes to trust (``write_certificate``); the CA key
never leaves memory, and the server key touches disk only encrypted with a one-off
password, for the instant ``ssl`` needs a file to load it from.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOSTS = ("127.0.0.1", "::1", "localhost")
VALID_FOR = dt.timedelta(days=30)


class DemoCA:
    """A CA that lives as long as the sandbox, and the server certificate it signed."""

    def __init__(self, hosts: tuple[str, ...] = HOSTS) -> None:
        now = dt.datetime.now(dt.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Upstream demo"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Upstream demo sandbox CA {now:%Y-%m-%d}"),
            ]
        )
        ca = (
            _builder(name, name, self._key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_pem = ca.public_bytes(serialization.Encoding.PEM)
        self._server_key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        server = (
            _builder(subject, ca.subject, self._server_key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        self._server_pem = server.public_bytes(serialization.Encoding.PEM)

    def server_context(self) -> ssl.SSLContext:
        """The TLS context the sandbox's TLS port serves with."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        password = secrets.token_bytes(32)
        key_pem = self._server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
        # ssl loads a key only from a file: a private directory, gone right after.
        with tempfile.TemporaryDirectory(prefix="upstream-sandbox-tls-") as folder:
            chain = Path(folder) / "server.pem"
            chain.write_bytes(self._server_pem + key_pem)
            context.load_cert_chain(chain, password=password)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only (what ``verify=`` takes)."""
        return ssl.create_default_context(cadata=self.certificate_pem.decode("ascii"))

    def write_certificate(self, path: str | os.PathLike[str]) -> Path:
        """Write the CA certificate (never a key) to ``path``, atomically; returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_bytes(self.certificate_pem)
        os.replace(partial, target)
        return target


def client_context(ca_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """A client context that trusts the CA certificate in ``ca_file`` (and nothing else)."""
    return ssl.create_default_context(cafile=os.fspath(ca_file))


def _builder(subject, issuer, public_key, now: dt.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))  # a clock a little behind still agrees
        .not_valid_after(now + VALID_FOR)
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
