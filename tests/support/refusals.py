"""The configuration mistakes ``wal2http run`` refuses at start: arguments, environment, what exit 2 says."""

from __future__ import annotations

from tests.support.clirunner import UNREACHABLE_DSN

__all__ = ["APP", "CASES", "DSN", "HOOK0", "HTTP", "SECRET"]

DSN = UNREACHABLE_DSN  # never reached: validation comes first
HTTP = ("--sink", "http", "--http-url", "http://127.0.0.1:9/hook")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
APP = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
HOOK0 = ("--sink", "hook0", "--hook0-api-url", "https://hook0.example/api/v1", "--hook0-application-id", APP)

# name: (arguments after `run`, environment, part of the message on stderr)
CASES: dict[str, tuple[list[str], dict[str, str], str]] = {
    # identifiers
    "slot characters": (["--slot", "Bad-Name"], {}, "invalid --slot 'Bad-Name': use 1-63 lower-case"),
    "slot length": (["--slot", "s" * 64], {}, "invalid --slot"),
    "slot from env": ([], {"WAL2HTTP_SLOT": "x;drop"}, "invalid --slot 'x;drop'"),
    "publication": (["--publication", "My-Pub"], {}, "invalid --publication 'My-Pub': use 1-63 lower-case"),
    "publication quote": (["--publication", "p'ub"], {}, "invalid --publication"),
    # URLs
    "url scheme": (["--sink", "http", "--http-url", "ftp://h/x"], {}, "--http-url must start with http://"),
    "url host": (["--sink", "http", "--http-url", "https:///x"], {}, "--http-url has no host"),
    "url port": (["--sink", "http", "--http-url", "https://h:99999/x"], {}, "--http-url has an invalid port"),
    "url space": (["--sink", "http", "--http-url", "https://h/a b"], {}, "without spaces or control"),
    "url missing": (["--sink", "http"], {}, "--sink http needs --http-url"),
    # sizes, durations, counts
    "batch size low": (["--batch-size", "0"], {}, "Invalid value for '--batch-size': 0 is not in the range"),
    "batch size high": (["--batch-size", "100001"], {}, "Invalid value for '--batch-size'"),
    "batch size env": ([], {"WAL2HTTP_BATCH_SIZE": "0"}, "Invalid value for '--batch-size'"),
    "batch size text": (["--batch-size", "ten"], {}, "'ten' is not a valid integer"),
    "batch bytes low": (["--batch-bytes", "100"], {}, "Invalid value for '--batch-bytes'"),
    "batch bytes high": (["--batch-bytes", str(1 << 30)], {}, "1024<=x<=67108864"),
    "batch wait": (["--batch-wait-ms", "60001"], {}, "Invalid value for '--batch-wait-ms'"),
    "http timeout": (["--http-timeout", "0"], {}, "Invalid value for '--http-timeout'"),
    # headers
    "header syntax": ([*HTTP, "--header", "X-Team billing"], {}, "--header must be 'Name: value'"),
    "header env syntax": ([*HTTP], {"WAL2HTTP_HEADER": "X-Team: a\nBad Name: b"}, "--header must be"),
    "header reserved": ([*HTTP, "--header", "Content-Type: text/plain"], {}, "sets this header itself"),
    "header secret literal": ([*HTTP, "--header", "X-Api-Key: k-123"], {}, "--header X-Api-Key looks like"),
    "header env unset": ([*HTTP, "--header", "X-Api-Key: env:NOPE"], {}, "variable NOPE is not set"),
    "header conflict": (
        [*HTTP, "--header", "Authorization: env:AUTH"],
        {"AUTH": "Basic eA==", "WAL2HTTP_HTTP_BEARER_TOKEN": "tok"},
        "--header Authorization conflicts with the bearer token",
    ),
    # secrets
    "signing prefix": (list(HTTP), {"WAL2HTTP_SIGNING_SECRET": SECRET[6:]}, "does not start with whsec_"),
    "signing base64": (
        list(HTTP),
        {"WAL2HTTP_SIGNING_SECRET": f"{SECRET} whsec_%%%%"},
        "secret 2 of 2 is not whsec_ followed by standard base64",
    ),
    "signing short": (list(HTTP), {"WAL2HTTP_SIGNING_SECRET": "whsec_c2hvcnQ="}, "5-byte key"),
    "bearer spaces": (
        list(HTTP),
        {"WAL2HTTP_HTTP_BEARER_TOKEN": "two words"},
        "printable ASCII characters without spaces",
    ),
    "bearer twice": (
        [*HTTP, "--http-bearer-token-file", "/etc/hostname"],
        {"WAL2HTTP_HTTP_BEARER_TOKEN": "tok"},
        "both WAL2HTTP_HTTP_BEARER_TOKEN and",
    ),
    "signing file missing": (
        [*HTTP, "--signing-secret-file", "/nonexistent/s"],
        {},
        "cannot read --signing-secret-file '/nonexistent/s'",
    ),
    "dsn twice": (["--dsn-file", "/etc/hostname"], {}, "both WAL2HTTP_DSN and --dsn-file are set"),
    "dsn missing": ([], {"WAL2HTTP_DSN": "", "DATABASE_URL": ""}, "no database given"),
    # Hook0
    "hook0 uuid": (
        [*HOOK0, "--hook0-application-id", "not-a-uuid"],
        {"HOOK0_API_TOKEN": "tok"},
        "--hook0-application-id must be a UUID",
    ),
    "hook0 token twice": (
        [*HOOK0, "--hook0-api-token-file", "/etc/hostname"],
        {"WAL2HTTP_HOOK0_API_TOKEN": "tok"},
        "both WAL2HTTP_HOOK0_API_TOKEN and --hook0-api-token-file are set",
    ),
    "hook0 token spaces": (
        list(HOOK0),
        {"HOOK0_API_TOKEN": "two words"},
        "the Hook0 API token (WAL2HTTP_HOOK0",
    ),
    "hook0 token missing": (list(HOOK0), {}, "--sink hook0 needs an API token"),
    "hook0 url credentials": (
        ["--sink", "hook0", "--hook0-api-url", "https://u:p@h/api/v1", "--hook0-application-id", APP],
        {"HOOK0_API_TOKEN": "tok"},
        "--hook0-api-url must not contain credentials",
    ),
    # receiver TLS files
    "client key alone": ([*HTTP, "--client-key", "/etc/hostname"], {}, "--client-key needs --client-cert"),
    "ca not pem": ([*HTTP, "--ca-file", "/etc/hostname"], {}, "--ca-file '/etc/hostname': holds no PEM"),
    "ca missing": ([*HTTP, "--ca-file", "/nonexistent.pem"], {}, "No such file"),
}
