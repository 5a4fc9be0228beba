"""Input rules through the installed command: exit 2 at start, the message on stderr, no secret echoed.

Every rule is checked in-process by tests/unit/test_cli_validation.py; these few cases run the real
entry point, so the exit status and the streams are the operator's.
"""

from __future__ import annotations

import pytest

from tests.support.process import cli
from tests.support.refusals import CASES, DSN, HTTP

# One click range check from the environment, one secret, one file, one sink dependency, the missing DSN.
END_TO_END = ["batch size env", "signing base64", "ca not pem", "hook0 token missing", "dsn missing"]


@pytest.mark.parametrize("case", END_TO_END)
def test_rejected_at_start(wal2http_bin: str, case: str) -> None:
    args, env, message = CASES[case]
    code, out, err = cli(wal2http_bin, "run", *args, dsn=DSN, env=env, timeout=30)
    assert code == 2, err
    assert message in err and not out, err


def test_a_rejected_secret_is_not_echoed(wal2http_bin: str) -> None:
    code, out, err = cli(wal2http_bin, "run", *HTTP, dsn=DSN, env={"WAL2HTTP_SIGNING_SECRET": "whsec_%%%%"},
                         timeout=30)
    assert code == 2 and "whsec_%%%%" not in out + err
