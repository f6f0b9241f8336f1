"""MySQL/MariaDB: every archiver table in utf8mb4, and the database's default too.

A database created with a latin1 (or utf8mb3) default got tables in that charset from
0001-0004, and a job whose text holds characters outside it (an emoji in `errors`) could
not be stored. Tables already in utf8mb4 are left alone (converting rebuilds a table);
the others are converted to utf8mb4 / utf8mb4_unicode_ci, ROW_FORMAT=DYNAMIC, so the
indexes on VARCHAR(255) columns stay within InnoDB's key length (3072 bytes: the largest,
sync_state's primary key on two VARCHAR(255), takes 2040). The database's default charset
becomes utf8mb4 as well, so tables made by later migrations are utf8mb4 whatever the
server's default. A no-op on SQLite and PostgreSQL (always UTF-8 here).

Downgrade changes nothing: converting back could lose text.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# A frozen snapshot: the archiver's tables as of this revision.
TABLES = ("jobs", "job_outputs", "job_variables", "sync_runs", "sync_errors", "sync_state",
          "job_status_changes", "packages", "clusters", "creators", "job_log_summaries")
CHARSET, COLLATION = "utf8mb4", "utf8mb4_unicode_ci"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return
    names = ", ".join(f"'{t}'" for t in TABLES)
    database_charset = bind.exec_driver_sql(
        "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
        "WHERE SCHEMA_NAME = DATABASE()").scalar()
    if database_charset != CHARSET:
        database = bind.exec_driver_sql("SELECT DATABASE()").scalar()
        op.execute(f"ALTER DATABASE `{database}` CHARACTER SET {CHARSET} COLLATE {COLLATION}")
    convert = bind.exec_driver_sql(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
        f"AND TABLE_NAME IN ({names}) AND TABLE_COLLATION NOT LIKE 'utf8mb4\\_%%' "
        "UNION SELECT TABLE_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        f"AND TABLE_NAME IN ({names}) AND CHARACTER_SET_NAME IS NOT NULL AND CHARACTER_SET_NAME <> 'utf8mb4'"
    ).scalars().all()
    for table in sorted(set(convert)):
        op.execute(f"ALTER TABLE `{table}` CONVERT TO CHARACTER SET {CHARSET} COLLATE {COLLATION}, "
                   "ROW_FORMAT=DYNAMIC")


def downgrade() -> None:
    pass
