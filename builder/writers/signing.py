"""Secure Boot signing of OUT/netboot.efi: an Authenticode signature made by osslsigncode, which
`sbverify --cert CERT` accepts and firmware whose db trusts CERT boots.

osslsigncode rather than sbsign (sbsigntool): both sign with OpenSSL, but sbsign stamps the current
time into the signature, so no two builds would give the same bytes; osslsigncode takes the
signing time as an argument (1, as the store's mtimes, or SOURCE_DATE_EPOCH), and a passphrase on
its standard input, so an encrypted key never lies decrypted on disk. UEFI does not look at the
signing time. Everything that can be wrong with the key and certificate is found before a byte is
written (check_signing): unreadable, not PEM, a key that does not match the certificate, an
encrypted key with no passphrase. Keys are read with `cryptography`; no cryptography by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from builder.errors import NetbuildError

SIGNER = "osslsigncode"
SIGNING_TIME = 1  # as the store's mtimes; SOURCE_DATE_EPOCH sets another


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
    if shutil.which(SIGNER) is None:
        raise NetbuildError(f"signing needs {SIGNER}; install it (Debian: osslsigncode)")
    return Signing(key=key, cert=cert, passphrase_env=passphrase_env, subject=certificate.subject.rfc4514_string())


def sign(image: Path, signing: Signing) -> None:
    """Replace image by its signed self."""
    signed = image.with_name(image.name + ".signed")
    when = os.environ.get("SOURCE_DATE_EPOCH", str(SIGNING_TIME))
    command = [SIGNER, "sign", "-certs", str(signing.cert), "-key", str(signing.key), "-h", "sha256",
               "-time", when, "-in", str(image), "-out", str(signed)]
    passphrase = None
    if signing.passphrase_env is not None:
        command[-4:-4] = ["-readpass", "/dev/stdin"]  # "-" is 2.9's; Debian 12 has 2.5
        passphrase = os.environ[signing.passphrase_env]
    proc = subprocess.run(command, input=passphrase, capture_output=True, text=True)
    if proc.returncode != 0:
        signed.unlink(missing_ok=True)
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise NetbuildError(f"{SIGNER} could not sign {image.name}: {lines[-1] if lines else proc.returncode}")
    os.replace(signed, image)
