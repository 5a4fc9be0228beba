"""README.rst shows exactly the outbox table ``slot create --hook0-outbox`` creates."""

from __future__ import annotations

import re
from pathlib import Path

from wal2http.hook0.checks import RULES
from wal2http.pg import outbox

README = Path(__file__).resolve().parents[2] / "README.rst"


def readme_ddl() -> str:
    text = README.read_text()
    begin = text.index("CREATE TABLE public.hook0_outbox (")
    return text[begin:text.index("';", begin) + 2]


def normalized(statements: str) -> str:
    """Comments dropped, adjacent string literals joined (as PostgreSQL joins them), spaces collapsed."""
    text = re.sub(r"--[^\n]*", "", statements)
    text = re.sub(r"'\s*\n\s*'", "", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\(\s", "(", re.sub(r"\s\)", ")", text))
    return text.strip().rstrip(";")


def test_the_readme_shows_the_ddl_the_command_runs() -> None:
    assert normalized(readme_ddl()) == normalized(outbox.ddl("public.hook0_outbox"))


def test_the_comment_says_what_the_table_is_for_and_how_it_is_cleaned() -> None:
    assert "Transactional outbox relayed to Hook0 by wal2http" in outbox.COMMENT
    assert "never deletes them" in outbox.COMMENT and "Keeping the outbox table small" in outbox.COMMENT


def test_the_table_has_every_column_the_sink_reads() -> None:
    columns = {name for name, _ in outbox.COLUMNS}
    assert {rule.column for rule in RULES} <= columns
    assert outbox.definition("labels") == "labels jsonb NOT NULL"
