"""The database schema (SQLAlchemy Core tables).

Every change here needs a new migration under migrations/versions; a test compares the
migrated schema with this metadata on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
)

# Deterministic constraint names, so later migrations can refer to them on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """*value* as an aware UTC datetime; naive values are taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite keeps no zone, so values are stored as naive UTC there; PostgreSQL uses
    `timestamptz` and may answer in the session's zone, which we convert back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        v = as_utc(value)
        if v is not None and dialect.name == "sqlite":
            return v.replace(tzinfo=None)
        return v

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value)


source_cursors = Table(
    "source_cursors",
    metadata,
    Column("source", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("complete", Boolean, nullable=False),
    Column("submitter_name", Text, nullable=True),
    Column("submitter_email", Text, nullable=True),
    Column("date", UTCDateTime, nullable=True),
    Column("pw_id", BigInteger, nullable=True),
    Column("web_url", Text, nullable=True),
    # JSON list of strings: what the source noticed was wrong with the series.
    Column("problems", Text, nullable=False),
    Column("tree", Text, nullable=True),
    Column("state", Text, nullable=False),
    Column("state_reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("source", "key"),
    Index(None, "state"),
)

source_events = Table(
    "source_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", Text, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("event_date", Text, nullable=False),
    Column(
        "series_id",
        Integer,
        ForeignKey("series.id", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    Column("seen_at", UTCDateTime, nullable=False),
    UniqueConstraint("source", "event_id"),
)

# A series event whose series answered 404: Patchwork listed it a moment ago, so the 404 is
# taken as transient (a replica behind, a series being rebuilt) and retried before "gone".
ingest_retries = Table(
    "ingest_retries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", Text, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("event_date", Text, nullable=False),
    Column("remote_id", BigInteger, nullable=False),  # the series id on the source
    Column("attempts", Integer, nullable=False),
    Column("status", Text, nullable=False),  # retrying | gone | done
    Column("error", Text, nullable=False),
    Column("first_at", UTCDateTime, nullable=False),
    Column("next_at", UTCDateTime, nullable=False),
    UniqueConstraint("source", "event_id"),
    Index(None, "status", "next_at"),
)

patches = Table(
    "patches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("series_id", Integer, ForeignKey("series.id", ondelete="CASCADE"), nullable=False),
    # 0-based position in Series.patches; the cover letter has is_cover and idx 0.
    Column("idx", Integer, nullable=False),
    Column("is_cover", Boolean, nullable=False),
    Column("msgid", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("author_name", Text, nullable=False),
    Column("author_email", Text, nullable=False),
    Column("tags", Text, nullable=False),
    Column("pw_id", BigInteger, nullable=True),
    Column("web_url", Text, nullable=True),
    Column("raw", LargeBinary, nullable=False),
    Column("date", UTCDateTime, nullable=True),
    # Header facts kept so load_series rebuilds the model without re-parsing the mail.
    Column("in_reply_to", Text, nullable=True),
    Column("refs", Text, nullable=False),  # space-joined msgids
    Column("recipients", Text, nullable=False),  # JSON [[name, email], ...]
    Column("has_diff", Boolean, nullable=False),
    Column("files", Text, nullable=False),  # JSON list of paths
    Column("pull_url", Text, nullable=True),  # a pull request's "URL REF"
    UniqueConstraint("series_id", "msgid"),
    Index(None, "pw_id"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "series_id",
        Integer,
        ForeignKey("series.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("worker", Text, nullable=False),
    # A running job belongs to its worker until the lease ends; an expired lease means the
    # worker died (kill -9, lost host) and the work is taken up again.
    Column("lease_until", UTCDateTime, nullable=True),
    Index(None, "status"),
)

check_results = Table(
    "check_results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("series_id", Integer, ForeignKey("series.id", ondelete="CASCADE"), nullable=False),
    Column("patch_idx", Integer, nullable=True),  # NULL: the result is about the whole series
    Column("check_name", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("log_path", Text, nullable=True),
    Column("duration", Float, nullable=False),
    Column("reproducer", Text, nullable=True),
    Column("details", Text, nullable=False),  # JSON [[key, value], ...]
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "series_id", "check_name"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("target", Text, nullable=False),  # "patchwork:<url>", "email:<addr>", ...
    Column(
        "series_id",
        Integer,
        ForeignKey("series.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("patch_pw_id", BigInteger, nullable=True),
    Column("context", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("remote_id", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "target", "patch_pw_id", "context"),
)

# --- contest: test branches, executor runs, per-test results ---------------------------
# Normalised rows (not NIPA's JSON blobs), so history, flakes and streaks are indexed queries.

branches = Table(
    "branches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("stream", Text, nullable=False),
    Column("date", UTCDateTime, nullable=False),
    Column("base", Text, nullable=False),
    Column("head", Text, nullable=False),
    Column("merges", Text, nullable=False),  # JSON {ref-or-url: okay|resolved|fail|error}
    Column("new_changes", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Position in its stream by (date, id), 1 = oldest: the column of the flakes matrix.
    Column("seq", Integer, nullable=False, server_default="0"),
    UniqueConstraint("name"),
    Index(None, "stream", "date"),
)

# Not a foreign key to series: branches imported from another CI name series we never saw.
branch_series = Table(
    "branch_series",
    metadata,
    Column(
        "branch_id",
        Integer,
        ForeignKey("branches.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("series_id", Integer, primary_key=True),
    Column("included", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Index(None, "series_id"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("branch_id", Integer, ForeignKey("branches.id", ondelete="CASCADE"), nullable=False),
    Column("executor", Text, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("status", Text, nullable=False),  # running | done | error
    Column("error", Text, nullable=False),  # the infrastructure reason when status is error
    Column("kernel", Text, nullable=False),
    Column("config", Text, nullable=False),
    Column("reproduce", Text, nullable=False),
    Column("log_dir", Text, nullable=True),
    Column("link", Text, nullable=True),
    # A running run belongs to its worker until the lease ends (see jobs.lease_until);
    # attempts counts how often it was started (a run is started again once).
    Column("worker", Text, nullable=False, server_default=""),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Index(None, "branch_id", "executor"),
    Index(None, "executor", "started_at"),
    Index(None, "status"),  # the status page's running runs
)

tests = Table(
    "tests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("grp", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("retry_outcome", Text, nullable=True),
    Column("duration", Float, nullable=True),
    Column("retry_duration", Float, nullable=True),
    Column("log_path", Text, nullable=True),
    Column("retry_log_path", Text, nullable=True),
    Column("reproduce", Text, nullable=False),
    Index(None, "grp", "name", "run_id"),
)

subtests = Table(
    "subtests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "test_id", Integer, ForeignKey("tests.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("path", Text, nullable=False),  # "/"-joined names from the test down, e.g. "a/b/c"
    Column("depth", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("retry_outcome", Text, nullable=True),
    Column("duration", Float, nullable=True),
)

# The contest log with subtests shown, filtered by final outcome: per test, without
# reading its subtests' rows.
Index(
    "ix_subtests_test_final",
    subtests.c.test_id,
    func.coalesce(subtests.c.retry_outcome, subtests.c.outcome),
)

crashes = Table(
    "crashes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column(
        "test_id", Integer, ForeignKey("tests.id", ondelete="CASCADE"), nullable=True, index=True
    ),
    Column("kind", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("excerpt", Text, nullable=False),
    Column("ignored", Boolean, nullable=False),
    Index(None, "fingerprint"),
)


# Derived from tests (db/matrix.py): per test, one code per branch of its stream, the i-th
# character for the branch with seq i+1, so the flakes matrix reads a row per test instead
# of a row per test and branch. Rebuilt from the tables above at any time.
test_matrix = Table(
    "test_matrix",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("stream", Text, nullable=False),
    Column("executor", Text, nullable=False),
    Column("grp", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("codes", Text, nullable=False),
    UniqueConstraint("stream", "executor", "grp", "name"),
)

# One culprit search per regressed test of a branch (analysis/bisect.py): the probes made so
# far, so a search a kill interrupted goes on where it stopped; held with a lease like runs.
bisections = Table(
    "bisections",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("branch_id", Integer, ForeignKey("branches.id", ondelete="CASCADE"), nullable=False),
    Column("executor", Text, nullable=False),
    Column("grp", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("status", Text, nullable=False),  # running | culprit | base | inconclusive | budget
    Column("culprit_series_id", Integer, nullable=True),
    # JSON [{"point", "series_id", "commit", "outcome", "detail", "log_dir"}], in probe order
    Column("steps", Text, nullable=False),
    Column("reason", Text, nullable=False),  # why it ended without a culprit
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("worker", Text, nullable=False, server_default=""),
    Column("lease_until", UTCDateTime, nullable=True),
    UniqueConstraint("branch_id", "executor", "grp", "name"),
    Index(None, "status"),
)

# --- executor jobs on worker hosts ([broker]) --------------------------------------------
# One row per (run, executor) sent through the broker. The job id is the Celery task id and
# the key a worker reports under, so a result delivered twice is stored once.

executor_jobs = Table(
    "executor_jobs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("queue", Text, nullable=False),
    Column("payload", Text, nullable=False),  # JSON JobSpec, republished as is
    Column("state", Text, nullable=False),  # queued | running | done | error
    Column("enqueued_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("deadline", Float, nullable=False),  # seconds a start may take to end
    Column("worker", Text, nullable=False, server_default=""),
    # JSON [{"worker", "started", "ended", "how"}]: each start, and how it ended
    Column("attempts", Text, nullable=False, server_default="[]"),
    Column("requeues", Integer, nullable=False, server_default="0"),
    Column("uploaded_bytes", Integer, nullable=False, server_default="0"),
    Column("collected", Boolean, nullable=False, server_default=false()),
    # False until the broker took the message: a send that failed is retried next cycle
    Column("sent", Boolean, nullable=False, server_default=false()),
    Index(None, "state"),
    Index(None, "run_id"),
)

# Seen by their heartbeats to the upload API.
executor_workers = Table(
    "executor_workers",
    metadata,
    Column("name", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("queues", Text, nullable=False),  # comma-separated
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("job_id", Text, nullable=True),  # running now
)
