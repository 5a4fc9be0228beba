"""Every input rule: ``run`` exits 2 at start with a message naming the option and what is allowed.

In-process (click's test runner): these checks end before any connection. A few of them also run
through the installed command, in tests/integration/test_validation.py.
"""

from __future__ import annotations

import pytest

from tests.support.certs import CertificateAuthority, KeyPair
from tests.support.clirunner import invoke
from tests.support.refusals import CASES, DSN, HTTP


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    code, out, err = invoke("run", *args, env={"WAL2HTTP_DSN": DSN, **(env or {})})
    assert not out
    return code, err


@pytest.mark.parametrize("case", CASES)
def test_rejected_at_start(case: str) -> None:
    args, env, message = CASES[case]
    code, err = run(*args, env=env)
    assert code == 2, err
    assert message in err, err


@pytest.mark.parametrize("value", ["whsec_%%%%", "two words", "k-123"])
def test_rejected_secrets_are_not_echoed(value: str) -> None:
    env = (
        {"WAL2HTTP_SIGNING_SECRET": value}
        if value.startswith("whsec")
        else {"WAL2HTTP_HTTP_BEARER_TOKEN": value}
    )
    args = [*HTTP, "--header", f"X-Api-Key: {value}"] if value == "k-123" else list(HTTP)
    code, err = run(*args, env=env)
    assert code == 2 and value not in err


def test_a_dsn_flag_with_a_password_is_refused() -> None:
    for dsn in ("postgresql://app:hunter22@127.0.0.1:1/app", "host=127.0.0.1 password=hunter22"):
        code, err = run("--dsn", dsn)
        assert code == 2 and "--dsn must not contain a password" in err and "WAL2HTTP_DSN or in a file" in err
        assert "hunter22" not in err


def test_a_url_with_credentials_is_refused_without_echoing_them() -> None:
    code, err = run("--sink", "http", "--http-url", "https://user:hunter22@h.example/x")
    assert code == 2 and "--http-url must not contain credentials (user:password@)" in err
    assert "hunter22" not in err


@pytest.fixture(scope="module")
def client_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, KeyPair]:
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("client", server=False)


def test_client_certificate_problems(client_pair: tuple[CertificateAuthority, KeyPair]) -> None:
    ca, pair = client_pair
    encrypted = ca.encrypted_copy(pair, "passphrase")
    code, err = run(*HTTP, "--client-cert", str(pair.cert), "--client-key", str(encrypted))
    assert code == 2 and "is encrypted: wal2http cannot ask for a passphrase" in err
    other = ca.issue("other", server=False)
    code, err = run(*HTTP, "--client-cert", str(pair.cert), "--client-key", str(other.key))
    assert code == 2 and "not a PEM certificate with its matching private key" in err
    code, err = run(*HTTP, "--client-cert", str(pair.cert))  # no key in the file
    assert code == 2 and f"cannot use --client-cert '{pair.cert}'" in err
