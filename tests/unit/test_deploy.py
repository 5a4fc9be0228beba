"""The container image and the systemd unit are hardened: read their files, verify the unit with systemd."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "contrib" / "Dockerfile"
DOCKERIGNORE = ROOT / "contrib" / "Dockerfile.dockerignore"
UNIT = ROOT / "contrib" / "wal2http.service"
SECRET_NAME_RE = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|DSN|DATABASE_URL|API_KEY|PRIVATE", re.IGNORECASE)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    result = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, args))
    return found


def test_the_image_is_multi_stage_on_a_pinned_slim_python() -> None:
    froms = [args for keyword, args in instructions(DOCKERFILE) if keyword == "FROM"]
    assert len(froms) >= 2
    for args in froms:
        image = args.split()[0]
        # python:<major.minor.patch>-slim-<debian release>, optionally with a digest: never a moving tag.
        assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image


def test_the_final_stage_runs_as_a_fixed_non_root_user_without_build_tools() -> None:
    final = stages(DOCKERFILE)[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER {users[-1]}: use a fixed numeric UID, not root"
    # The user is created with that UID.
    assert any(keyword == "RUN" and f"--uid {uid}" in args for keyword, args in final)
    runs = " ".join(args for keyword, args in final if keyword == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential", "pip install", "-dev "):
        assert tool not in runs, f"the final stage installs build tooling: {tool}"
    copies = [args for keyword, args in final if keyword == "COPY"]
    assert copies and all(args.startswith("--from=") for args in copies), "the final stage copies sources"


def test_no_secret_is_baked_into_the_image() -> None:
    for keyword, args in instructions(DOCKERFILE):
        if keyword in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            assert not any(SECRET_NAME_RE.search(name) for name in names), f"{keyword} {args}"
    pip = [args for keyword, args in instructions(DOCKERFILE) if keyword == "RUN" and "pip install" in args]
    assert pip and all("--no-cache-dir" in args for args in pip)


def test_entrypoint_command_and_healthcheck() -> None:
    final = dict(stages(DOCKERFILE)[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["wal2http"]
    assert json.loads(final["CMD"]) == ["run"]
    health = final["HEALTHCHECK"]
    assert "--interval=" in health and "CMD" in health and not health.startswith("NONE")


def test_the_build_context_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything, then allow what the build copies"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for keyword, args in stages(DOCKERFILE)[0]:
        if keyword == "COPY":
            copied.update(args.split()[:-1])
    assert copied <= allowed, f"COPY of files the .dockerignore excludes: {copied - allowed}"
    assert not allowed & {".git", ".venv", "tests", ".env"}


def unit_file() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_the_systemd_unit_is_sandboxed() -> None:
    service = unit_file()["Service"]
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "CapabilityBoundingSet": "",
        "KillSignal": "SIGTERM",
    }
    for key, value in expected.items():
        assert service.get(key) == value, f"{key}={service.get(key)}"
    assert service["ExecStart"].endswith("wal2http run")
    assert service["EnvironmentFile"].startswith("/etc/wal2http/")
    assert "Environment" not in service, "secrets belong in the EnvironmentFile, not in the unit"
    assert "User" not in service, "DynamicUser picks an unprivileged user"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at the wal2http of this environment.
    installed = Path(sys.executable).parent / "wal2http"
    assert installed.is_file(), "run the tests from the environment where wal2http is installed"
    unit = tmp_path / "wal2http.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/wal2http", str(installed)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # It exits 0 even after "Unknown key" warnings: any output is a failure.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr
