"""The Hook0 lines of ``check-config``: the outbox table, the API, the token and the event types."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wal2http.checklist import Check, Status, failed, ident, ok, warning
from wal2http.config.hook0 import Hook0Config, Hook0Mode
from wal2http.config.secrets import HOOK0_API_TOKEN
from wal2http.config.sections import SourceConfig
from wal2http.config.validation import public_url
from wal2http.errors import Wal2HttpError
from wal2http.hook0.mapping import Hook0Mapper, sanitize_name
from wal2http.pg import outbox as outbox_sql
from wal2http.pg import publication as publication_sql
from wal2http.pg.connection import Connection

if TYPE_CHECKING:
    from wal2http.hook0.api import Answer, Hook0Api

JSON = frozenset({"json", "jsonb"})
TEXT = frozenset({"text", "character varying"})
LISTED_AT_MOST = 8  # missing event types named in one line


@dataclass(frozen=True)
class Rule:
    """What the Hook0 sink needs of one outbox column."""

    column: str
    required: bool
    types: frozenset[str]  # types whose every value works
    loose: frozenset[str] = frozenset()  # types that work when each value is right
    needs: str = ""  # what a value of a loose type must be
    others: Status = Status.FAILED  # any other type: each row rejected (or, WARNING, sent as text)


RULES = (
    Rule("event_id", False, frozenset({"uuid"}), TEXT, "a UUID"),
    Rule("event_type", True, TEXT),
    Rule("payload", True, JSON | TEXT, others=Status.WARNING),
    Rule("payload_content_type", False, TEXT),
    Rule("labels", True, JSON),
    Rule("metadata", False, JSON),
    Rule("occurred_at", False, frozenset({"timestamp with time zone"}), TEXT, "a timestamp with a time zone"),
)
OCCURRED_AT_ALIAS = "created_at"  # the earlier tool's name of occurred_at


@dataclass(frozen=True)
class Published:
    """What changes mode turns into event types: the database and what its publication streams."""

    database: str
    tables: tuple[tuple[str, str], ...]
    operations: tuple[str, ...]


# -- the outbox table ------------------------------------------------------------------------------


def create_command(outbox: tuple[str, str], source: SourceConfig) -> str:
    """The ``slot create`` invocation that makes the outbox table for these settings."""
    options = ""
    if source.publication != "wal2http":
        options += f" --publication {source.publication}"
    if ".".join(outbox) != Hook0Config.outbox_table:
        options += f" --hook0-outbox-table {'.'.join(outbox)}"
    return f"wal2http slot create --hook0-outbox{options} --if-not-exists"


def outbox_table_check(table: outbox_sql.Table | None, name: str, *, messages: bool, prefix: str,
                       create: str) -> Check:
    """The table exists, and its columns are what the Hook0 sink reads, with types it can use."""
    check = "hook0 outbox table"
    if table is None:
        if messages:
            return warning(check, f"{name} does not exist: only pg_logical_emit_message() messages prefixed "
                                  f"{prefix!r} become Hook0 events",
                           f"if the application writes outbox rows, create the table: {create}")
        return failed(check, f"{name} does not exist: no change would become a Hook0 event",
                      f"create it: {create}; or pass --messages to use pg_logical_emit_message() instead")
    if table.kind not in ("r", "p"):
        return failed(check, f"{table.name} is not a table (relkind {table.kind!r}): its rows are not streamed",
                      f"use a table: {create}, or choose another --hook0-outbox-table")
    problems = [p for rule in RULES for p in _column_problems(table.name, rule, _column_for(table, rule))]
    if not problems:
        read = [f"{c.name} {c.type}" for r in RULES if (c := _column_for(table, r)) is not None]
        return ok(check, f"{table.name} has the columns the Hook0 sink reads: {', '.join(read)}")
    status = Status.FAILED if any(s is Status.FAILED for s, _, _ in problems) else Status.WARNING
    detail = f"{table.name}: " + "; ".join(text for _, text, _ in problems)
    fixes = " ".join(dict.fromkeys(fix for _, _, fix in problems if fix))  # in order, once each
    return Check(check, status, detail, fixes)


def _column_for(table: outbox_sql.Table, rule: Rule) -> outbox_sql.Column | None:
    column = table.column(rule.column)
    if column is None and rule.column == "occurred_at":
        return table.column(OCCURRED_AT_ALIAS)
    return column


def _either(types: list[str]) -> str:
    return types[0] if len(types) == 1 else ", ".join(types[:-1]) + " or " + types[-1]


def _column_problems(table: str, rule: Rule, column: outbox_sql.Column | None) -> list[tuple[Status, str, str]]:
    if column is None:
        if not rule.required:
            return []
        return [(Status.FAILED, f"no column {rule.column}, which every row needs",
                 f"ALTER TABLE {table} ADD COLUMN {outbox_sql.definition(rule.column)};")]
    kind = "text" if column.enum else column.type
    name = column.name
    wanted = _either(sorted(rule.types))
    canonical = outbox_sql.definition(rule.column).split()[1]
    retype = f"ALTER TABLE {table} ALTER COLUMN {ident(name)} TYPE {canonical} USING {ident(name)}::{canonical};"
    if kind not in rule.types | rule.loose:
        if rule.others is Status.WARNING:
            return [(Status.WARNING, f"column {name} is {column.type}: its values are sent as their JSON or text "
                                     f"form, not as {wanted}", retype)]
        return [(Status.FAILED, f"column {name} is {column.type}, so every row would be rejected: the Hook0 sink "
                                f"needs {wanted}", retype)]
    found = []
    if kind in rule.loose:
        found.append((Status.WARNING, f"column {name} is {column.type}: a row whose {name} is not {rule.needs} "
                                      "is rejected", retype))
    if rule.required and not column.not_null:
        found.append((Status.WARNING, f"column {name} accepts NULL, and a row with a NULL {name} is rejected",
                      f"ALTER TABLE {table} ALTER COLUMN {ident(name)} SET NOT NULL;"))
    return found


def outbox_publication_check(conn: Connection, publication: publication_sql.Publication, schema: str, table: str,
                             found: outbox_sql.Table, create: str) -> Check:
    """The publication streams the outbox's inserts, with every column the sink reads."""
    check = "hook0 outbox publication"
    pub, name = publication.name, found.name
    member = outbox_sql.membership(conn, pub, schema, table)
    if member is None:
        return failed(check, f"{name} is not in publication {pub}: its rows would not be streamed",
                      f"ALTER PUBLICATION {ident(pub)} ADD TABLE {name}; or {create}")
    if "insert" not in publication.operations:
        kept = ", ".join(["insert", *publication.operations])
        return failed(check, f"publication {pub} does not publish insert: outbox rows would not be streamed",
                      f"ALTER PUBLICATION {ident(pub)} SET (publish = '{kept}');")
    if member.columns is not None:
        read = [c.name for r in RULES if (c := _column_for(found, r)) is not None]
        unpublished = [c for c in read if c not in member.columns]
        if unpublished:
            return failed(check, f"publication {pub} streams only some columns of {name}, not "
                                 f"{', '.join(unpublished)}, which the Hook0 sink reads",
                          f"ALTER PUBLICATION {ident(pub)} DROP TABLE {name}; "
                          f"ALTER PUBLICATION {ident(pub)} ADD TABLE {name};")
    if member.row_filter:
        return warning(check, f"publication {pub} streams only the rows of {name} matching WHERE "
                              f"{member.row_filter}; other rows never become Hook0 events")
    return ok(check, f"{name} is in publication {pub}, which publishes its inserts")


def outbox_checks(conn: Connection, hook0: Hook0Config, source: SourceConfig) -> list[Check]:
    """check-config in outbox mode: the table, then how the publication streams it."""
    schema, table = hook0.outbox_schema_table
    create = create_command((schema, table), source)
    found = outbox_sql.find_table(conn, schema, table)
    name = found.name if found is not None else outbox_sql.quoted(conn, schema, table)
    checks = [outbox_table_check(found, name, messages=source.messages, prefix=hook0.message_prefix,
                                 create=create)]
    publication = publication_sql.find_publication(conn, source.publication)
    if found is not None and publication is not None:  # a missing publication is a check of its own
        checks.append(outbox_publication_check(conn, publication, schema, table, found, create))
    return checks


def published(conn: Connection, source: SourceConfig, database: str) -> Published | None:
    """What changes mode would turn into events; None without a publication (a check of its own)."""
    publication = publication_sql.find_publication(conn, source.publication)
    if publication is None:
        return None
    tables = tuple(publication_sql.published_tables(conn, source.publication))
    return Published(database, tables, publication.operations)


# -- the API ---------------------------------------------------------------------------------------


def api_checks(hook0: Hook0Config, changes: Published | None) -> list[Check]:
    """The API answers, accepts the token for the application, and (changes mode) knows the event types."""
    from wal2http.hook0.api import (
        Hook0Api,  # requests: only when a check talks to Hook0
    )

    api = Hook0Api(hook0)
    try:
        checks = [_instance_check(api, hook0)]
        if checks[0].status is Status.FAILED:
            return checks
        token, listed = _token_check(api, hook0)
        checks.append(token)
        if hook0.mode == Hook0Mode.CHANGES and listed is not None and changes is not None:
            checks.append(event_types_check(hook0, changes, listed))
        return checks
    finally:
        api.close()


def _api_fix() -> str:
    return "check --hook0-api-url: Hook0's API base URL ends in /api/v1, e.g. https://app.hook0.com/api/v1"


def _unexpected(check: str, answer: Answer) -> Check:
    """A failure for an answer that is neither success nor a refusal of the token."""
    shown = public_url(answer.url)
    if 300 <= answer.status < 400:
        where = f", to {public_url(answer.location)}" if answer.location else ""
        return failed(check, f"GET {shown} answered {answer.status} (a redirect{where}); wal2http does not "
                             "follow redirects", "put the URL it redirects to in --hook0-api-url")
    if answer.status in (429, 502, 503, 504) or answer.status >= 500:
        return failed(check, f"GET {shown} answered {answer.describe()}",
                      "Hook0 is unavailable or overloaded: try again later")
    return failed(check, f"GET {shown} answered {answer.describe()}: not Hook0's API", _api_fix())


def _instance_check(api: Hook0Api, hook0: Hook0Config) -> Check:
    check = "hook0 api"
    try:
        answer = api.instance()
    except Wal2HttpError as e:
        return failed(check, str(e), "check --hook0-api-url, the network and that Hook0 is up")
    if answer.status != 200:
        return _unexpected(check, answer)
    if not isinstance(answer.value, dict):
        return failed(check, f"GET {public_url(answer.url)} answered 200 but not with Hook0's JSON instance "
                             "configuration: a web page, not the API", _api_fix())
    return ok(check, f"{public_url(hook0.api_url)} answers as a Hook0 API (GET /instance, without the token)")


def _token_check(api: Hook0Api, hook0: Hook0Config) -> tuple[Check, set[str] | None]:
    """Listing the application's event types: the cheapest read the token must be allowed."""
    check, app = "hook0 token", hook0.application_id
    try:
        answer = api.event_types()
    except Wal2HttpError as e:
        return failed(check, str(e), "check the network and that Hook0 is up"), None
    if answer.status == 200:
        names = _event_type_names(answer.value)
        if names is None:
            return failed(check, f"GET {public_url(answer.url)} answered 200, but not with a list of event "
                                 "types", _api_fix()), None
        listed = f"{len(names)} event type{'s' if len(names) != 1 else ''} listed"
        return ok(check, f"accepted for application {app} ({listed}); the token is not shown"), names
    if answer.problem.id.startswith("Auth") or answer.status == 401:
        return failed(check, f"Hook0 refused the API token ({answer.describe()})",
                      f"check the token in {HOOK0_API_TOKEN.describe()}: a Hook0 service token of the "
                      f"organization owning application {app}"), None
    if answer.status == 403:
        refused = (f"Hook0 accepted the token but refused it application {app} ({answer.describe()}): the "
                   "application belongs to another organization, or the token is restricted")
        fix = (f"check --hook0-application-id, and use a service token of the organization owning "
               f"application {app}")
        if hook0.mode == Hook0Mode.CHANGES or hook0.ensure_event_types:
            what = "changes mode" if hook0.mode == Hook0Mode.CHANGES else "--hook0-ensure-event-types"
            return failed(check, f"{refused}; {what} needs to list event types", fix), None
        return warning(check, f"{refused}; if it is restricted to ingesting events, delivery may still work",
                       fix), None
    return _unexpected(check, answer), None


def _event_type_names(value: Any) -> set[str] | None:
    if not isinstance(value, list):
        return None
    names = {item.get("event_type_name") for item in value if isinstance(item, dict)}
    if len(names) != len(value) or not all(isinstance(n, str) for n in names):
        return None
    return {str(n) for n in names}


def event_types_check(hook0: Hook0Config, changes: Published, listed: Iterable[str]) -> Check:
    """Changes mode: an event type for each published table and operation, or they are created at start."""
    check = "hook0 event types"
    service = hook0.service or sanitize_name(changes.database)
    mapper = Hook0Mapper(hook0, service)
    wanted = sorted({t for _, table in changes.tables for t in mapper.event_types_for(table, changes.operations)})
    if not wanted:
        return ok(check, "the publication streams no table: no event type needed yet")
    known = set(listed)
    missing = [t for t in wanted if t not in known]
    count = f"{len(wanted)} event type{'s' if len(wanted) != 1 else ''} of the published tables"
    if not missing:
        return ok(check, f"all {count} exist in application {hook0.application_id}")
    if hook0.ensure_event_types:
        return ok(check, f"{len(missing)} of the {count} do not exist yet; --hook0-ensure-event-types creates "
                         "them at start")
    shown = ", ".join(missing[:LISTED_AT_MOST])
    if len(missing) > LISTED_AT_MOST:
        shown += f" and {len(missing) - LISTED_AT_MOST} more"
    return failed(check, f"application {hook0.application_id} lacks {len(missing)} of the {count}: {shown}; "
                         "their events would be rejected (EventTypeDoesNotExist)",
                  "pass --hook0-ensure-event-types, or create them in Hook0")
