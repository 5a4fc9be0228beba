"""Secrets: a string type that never shows itself, and where each secret may be read from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wal2http.config.dsn import dsn_secret_values
from wal2http.errors import ConfigError

MAX_SECRET_FILE_BYTES = 65536


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Scrubber:
    """Replaces every known secret value in a text with ``***``: logs and emails both go through one.

    Values shorter than 4 characters are left alone: they would erase ordinary words.
    """

    MIN_LENGTH = 4

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a password inside a DSN is not half-replaced.
        self.secrets = sorted({s for s in secrets if len(s) >= self.MIN_LENGTH}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class SecretSource:
    """Where one secret may come from: a ``--*-file`` option or environment variables, never a flag.

    Precedence: the file (``--x-file`` or ``WAL2HTTP_X_FILE``), then ``WAL2HTTP_X``, then the
    earlier tool's variable. Setting both the file and ``WAL2HTTP_X`` is refused as ambiguous.
    """

    env: tuple[str, ...]  # WAL2HTTP_ name first, then legacy names
    file_option: str  # "--signing-secret-file"

    @property
    def file_env(self) -> str:
        return f"{self.env[0]}_FILE"

    def describe(self) -> str:
        return f"{self.env[0]} or {self.file_option}"

    def load(self, file_path: str | None, environ: Mapping[str, str]) -> Secret | None:
        """The secret, or None when no source is set."""
        if file_path:
            if environ.get(self.env[0]):
                raise ConfigError(f"both {self.env[0]} and {self.file_option} are set: keep one of them")
            return Secret(read_secret_file(file_path, self.file_option))
        for name in self.env:
            if environ.get(name):
                return Secret(environ[name])
        return None


DSN = SecretSource(("WAL2HTTP_DSN", "DATABASE_URL"), "--dsn-file")
HTTP_BEARER_TOKEN = SecretSource(("WAL2HTTP_HTTP_BEARER_TOKEN",), "--http-bearer-token-file")
SIGNING_SECRET = SecretSource(("WAL2HTTP_SIGNING_SECRET",), "--signing-secret-file")
HOOK0_API_TOKEN = SecretSource(("WAL2HTTP_HOOK0_API_TOKEN", "HOOK0_API_TOKEN"), "--hook0-api-token-file")
ADMIN_TOKEN = SecretSource(("WAL2HTTP_ADMIN_TOKEN",), "--admin-token-file")
SMTP_PASSWORD = SecretSource(("WAL2HTTP_SMTP_PASSWORD", "SMTP_PASSWORD"), "--smtp-password-file")
# Every secret a command reads; the documentation test checks each is documented.
SECRET_SOURCES = (DSN, HTTP_BEARER_TOKEN, SIGNING_SECRET, HOOK0_API_TOKEN, ADMIN_TOKEN, SMTP_PASSWORD)


def read_secret_file(path: str, option: str) -> str:
    """The text of a secret file, without its trailing newline; ConfigError never quotes the content."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {option} {path!r}: {e.strerror or e}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{option} {path!r} is over {MAX_SECRET_FILE_BYTES} bytes: not a secret file")
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{option} {path!r} is not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"{option} {path!r} is empty")
    return text


def load_dsn(flag: str | None, file_path: str | None, environ: Mapping[str, str]) -> Secret:
    """The DSN from ``--dsn`` (refused if it holds a password), ``--dsn-file`` or the environment."""
    if flag:
        if file_path:
            raise ConfigError("both --dsn and --dsn-file are set: keep one of them")
        if dsn_secret_values(flag):
            raise ConfigError(
                "--dsn must not contain a password: anyone on this machine can read command lines; "
                "put the DSN in WAL2HTTP_DSN or in a file named by --dsn-file, "
                "or leave the password out and use PGPASSWORD or ~/.pgpass"
            )
        return Secret(flag)
    return DSN.load(file_path, environ) or Secret("")
