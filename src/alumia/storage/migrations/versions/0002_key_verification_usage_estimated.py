"""BYOK key verification state, and usage records whose tokens were estimated

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("byok_keys") as batch:
        batch.add_column(sa.Column("verification", sa.String(16), nullable=False,
                                   server_default=sa.text("'unverified'")))
        batch.add_column(sa.Column("last_verified_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("usage_estimated", sa.Boolean(), nullable=False,
                                   server_default=sa.text("false")))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("usage_estimated")
    with op.batch_alter_table("byok_keys") as batch:
        batch.drop_column("last_verified_at")
        batch.drop_column("verification")
