"""Usage record statuses up to 32 characters ("client_disconnected" did not fit in 16 on PostgreSQL)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.alter_column("status", existing_type=sa.String(16), type_=sa.String(32),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.alter_column("status", existing_type=sa.String(32), type_=sa.String(16),
                           existing_nullable=False)
