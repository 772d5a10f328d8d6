"""Meter events: infrastructure usage charged to the balance

Revision ID: 0005b
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005b"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meter_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("service", sa.String(24), nullable=False),
        sa.Column("quantity", sa.String(40), nullable=False),
        sa.Column("unit_price_microcents", sa.BigInteger(), nullable=False),
        sa.Column("charged_microcents", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=True),
        sa.Column("project_id", sa.String(100), nullable=True),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("api_key_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_meter_events_org_id_orgs")),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"],
                                name=op.f("fk_meter_events_api_key_id_api_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_events")),
        sa.UniqueConstraint("org_id", "event_id", name="uq_meter_events_org_id_event_id"),
    )
    op.create_index("ix_meter_events_org_id_created_at", "meter_events", ["org_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_meter_events_org_id_created_at", table_name="meter_events")
    op.drop_table("meter_events")
