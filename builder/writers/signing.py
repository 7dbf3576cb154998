"""Secure Boot signing of OUT/netboot.efi: an Authenticode signature made by sbsign (sbsigntool),
which `sbverify --cert CERT` accepts and firmware whose db trusts CERT boots.

Everything that can be wrong with the key and certificate is found before a byte is written
(check_signing): unreadable, not PEM, a key that does not match the certificate, an encrypted key
with no passphrase. Keys are read with `cryptography`; no cryptography is done here by hand.
sbsign cannot be given a passphrase, so an encrypted key is handed to it decrypted, in a file
only this user can read, removed as soon as sbsign is done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from builder.errors import NetbuildError

SBSIGN = "sbsign"


@dataclass(frozen=True)
class Signing:
    key: Path
    cert: Path
    passphrase_env: str | None  # the environment variable holding the key's passphrase
    subject: str  # the certificate's subject, for the manifest


def _private_key(key: Path, passphrase_env: str | None) -> PrivateKeyTypes:
    try:
        data = key.read_bytes()
    except OSError as e:
        raise NetbuildError(f"--sign-key {key}: cannot read: {e.strerror}") from None
    password = None
    if passphrase_env is not None:
        if passphrase_env not in os.environ:
            raise NetbuildError(f"--sign-passphrase-env {passphrase_env}: no such environment variable")
        password = os.environ[passphrase_env].encode()
    try:
        return serialization.load_pem_private_key(data, password=password)
    except TypeError:
        if password is None:
            raise NetbuildError(f"--sign-key {key} is encrypted: name the environment variable that holds its "
                                "passphrase with --sign-passphrase-env VAR") from None
        raise NetbuildError(f"--sign-key {key} is not encrypted: drop --sign-passphrase-env") from None
    except ValueError as e:
        if password is not None and "password" in str(e).lower():
            raise NetbuildError(f"--sign-key {key}: the passphrase in ${passphrase_env} does not decrypt it") from None
        raise NetbuildError(f"--sign-key {key}: not a PEM private key") from None


def check_signing(key: Path, cert: Path, passphrase_env: str | None) -> Signing:
    """The signing setup, if it can sign: else one line saying what is wrong with it."""
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except OSError as e:
        raise NetbuildError(f"--sign-cert {cert}: cannot read: {e.strerror}") from None
    except ValueError:
        raise NetbuildError(f"--sign-cert {cert}: not a PEM X.509 certificate") from None
    private = _private_key(key, passphrase_env)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise NetbuildError(f"--sign-key {key} does not match --sign-cert {cert}: they hold different public keys")
    if shutil.which(SBSIGN) is None:
        raise NetbuildError("signing needs sbsign; install sbsigntool (Debian: sbsigntool)")
    return Signing(key=key, cert=cert, passphrase_env=passphrase_env, subject=certificate.subject.rfc4514_string())


def sign(image: Path, signing: Signing) -> None:
    """Replace image by its signed self."""
    signed = image.with_name(image.name + ".signed")
    with tempfile.TemporaryDirectory(prefix="netbuild-sign-") as private_dir:
        key = signing.key
        if signing.passphrase_env is not None:
            key = Path(private_dir) / "key.pem"
            plain = _private_key(signing.key, signing.passphrase_env).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(plain)
        proc = subprocess.run([SBSIGN, "--key", str(key), "--cert", str(signing.cert), "--output", str(signed),
                               str(image)], capture_output=True, text=True)
    if proc.returncode != 0:
        signed.unlink(missing_ok=True)
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise NetbuildError(f"sbsign could not sign {image.name}: {why}")
    os.replace(signed, image)
