"""Throwaway X.509 material for TLS tests, made with the openssl command: a CA, server and client certs."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertificateAuthority", "KeyPair"]


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its unencrypted PEM key."""

    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is missing: install it with `apt-get install openssl`")
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")


class CertificateAuthority:
    """A self-signed CA in ``directory`` that issues server and client certificates (EC P-256, 1 day)."""

    def __init__(self, directory: Path, name: str = "wal2http test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.cert = directory / "ca.crt"
        self.key = directory / "ca.key"
        _openssl(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(self.key), "-out", str(self.cert), "-days", "1", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )  # fmt: skip

    def issue(self, name: str, *, server: bool) -> KeyPair:
        """A certificate for ``name``: a server one valid for 127.0.0.1 and localhost, or a client one."""
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=self.directory,
        )  # fmt: skip
        extensions = self.directory / f"{name}.ext"
        if server:
            extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        else:
            extensions.write_text("extendedKeyUsage=clientAuth\n")
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(extensions),
            cwd=self.directory,
        )  # fmt: skip
        return KeyPair(cert, key)

    def encrypted_copy(self, pair: KeyPair, passphrase: str) -> Path:
        """The pair's key, encrypted with ``passphrase``."""
        encrypted = self.directory / f"{pair.key.stem}.encrypted.key"
        _openssl(
            "pkey",
            "-in",
            str(pair.key),
            "-out",
            str(encrypted),
            "-aes256",
            "-passout",
            f"pass:{passphrase}",
            cwd=self.directory,
        )
        return encrypted
