"""index a user's unfinished tasks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

The concurrency-limit count on every task creation read all of a user's tasks through
ix_tasks_user_id_created_at_id; this partial index holds only unfinished ones.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('queued', 'processing')"


def upgrade():
    op.create_index(
        "ix_tasks_user_id_active",
        "tasks",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )


def downgrade():
    op.drop_index("ix_tasks_user_id_active", table_name="tasks")
