"""Auto top-up: the org's saved Stripe customer and card, and the marker of a top-up in flight

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orgs") as batch:
        batch.add_column(sa.Column("stripe_customer_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("stripe_payment_method_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("auto_topup_attempt_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("auto_topup_started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orgs") as batch:
        batch.drop_column("auto_topup_started_at")
        batch.drop_column("auto_topup_attempt_id")
        batch.drop_column("stripe_payment_method_id")
        batch.drop_column("stripe_customer_id")
