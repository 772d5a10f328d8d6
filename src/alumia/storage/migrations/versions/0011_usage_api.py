"""Which API a call came through: usage_records.api

`chat` (POST /v1/chat/completions and the lab), `messages` (Anthropic's Messages and count_tokens
never meter), `responses`, `embeddings`. Rows written before this revision could have come through
either chat door and say `unknown`.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("api", sa.String(16), nullable=False, server_default="unknown"))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("api")
