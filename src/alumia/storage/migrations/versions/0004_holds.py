"""Holds: money set aside for platform calls in flight

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orgs") as batch:
        batch.add_column(sa.Column("held_microcents", sa.BigInteger(), nullable=False,
                                   server_default=sa.text("0")))
    op.create_table(
        "holds",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("amount_microcents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("charged_microcents", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_holds_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
    )
    op.create_index("ix_holds_status_expires_at", "holds", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_holds_status_expires_at", table_name="holds")
    op.drop_table("holds")
    with op.batch_alter_table("orgs") as batch:
        batch.drop_column("held_microcents")
