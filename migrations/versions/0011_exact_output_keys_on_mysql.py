"""MySQL/MariaDB: job_anomalies.output_key compares byte for byte, as the rules and the other
databases do.

Two outputs of one job whose keys differ only in case ('Orders', 'orders') are two outputs to
the anomaly rules (archiver.anomaly keys them as given) and to SQLite and PostgreSQL. Under
MySQL's case-blind default collation they were one primary key (job_id, kind, output_key), so
the second verdict failed the verdict write of its whole batch there (logged as a scoring
failure; the jobs were stored). The column becomes utf8mb4_bin; a no-op on SQLite and
PostgreSQL.

Downgrade returns it to the table's collation; it fails if two stored keys of one job and
kind differ only in case (delete one first).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

COMMENT = "The output a zero_records or volume_drop verdict is about ('' for the others)."   # frozen


def _column(collation: str) -> str:
    quoted = COMMENT.replace("'", "''")
    return f"VARCHAR(255) {collation} NOT NULL COMMENT '{quoted}'"


def upgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        op.execute(f"ALTER TABLE job_anomalies MODIFY output_key "
                   f"{_column('CHARACTER SET utf8mb4 COLLATE utf8mb4_bin')}")


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        op.execute(f"ALTER TABLE job_anomalies MODIFY output_key {_column('')}")
