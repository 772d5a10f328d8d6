"""Stripe deposits: checkout payments, received webhook events, refunds

Revision ID: 0005a
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005a"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_payments",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("paid_cents", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("refunded_cents", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_stripe_payments_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_payments")),
        sa.UniqueConstraint("payment_intent_id", name=op.f("uq_stripe_payments_payment_intent_id")),
    )
    op.create_index("ix_stripe_payments_org_id", "stripe_payments", ["org_id"])
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_table(
        "stripe_refunds",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("applied_cents", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_refunds")),
    )
    op.create_index("ix_stripe_refunds_payment_intent_id", "stripe_refunds", ["payment_intent_id"])


def downgrade() -> None:
    op.drop_index("ix_stripe_refunds_payment_intent_id", table_name="stripe_refunds")
    op.drop_table("stripe_refunds")
    op.drop_table("stripe_events")
    op.drop_index("ix_stripe_payments_org_id", table_name="stripe_payments")
    op.drop_table("stripe_payments")
