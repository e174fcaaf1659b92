"""remember the day a user's monthly resets count from

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Without it a reset clamped to a short month (Jan 31 -> Feb 28) moved the user's reset day
for good (Mar 28, Apr 28, ...). The next reset is now counted from the anchor: Jan 31 ->
Feb 28 -> Mar 31. NULL means "count from credits_reset_at" (the first reset sets it).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("credits_reset_anchor", sa.DateTime(timezone=True)))
    # Existing users keep their current day: whatever clamping already happened stays.
    op.execute("UPDATE users SET credits_reset_anchor = credits_reset_at")


def downgrade():
    with op.batch_alter_table("users") as batch:
        batch.drop_column("credits_reset_anchor")
