"""Join the Stripe payments and meter events branches

Revision ID: 0006
Revises: 0005a, 0005b
"""

revision = "0006"
down_revision = ("0005a", "0005b")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
