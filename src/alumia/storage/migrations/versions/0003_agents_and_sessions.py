"""Agents (the default "Ala" in every org) and browser sessions

Revision ID: 0003
Revises: 0002
"""

import uuid

import sqlalchemy as sa
from alembic import op

DEFAULT_AGENT_DESCRIPTION = "The default agent of every org."

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("system_prompt", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_agents_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("org_id", "slug", name="uq_agents_org_id_slug"),
    )
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_sessions")),
    )
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"])
    # Every org has the default agent Ala; orgs created before this migration get theirs here.
    bind = op.get_bind()
    for org_id, created_at in bind.execute(sa.text("SELECT id, created_at FROM orgs")).all():
        bind.execute(sa.text(
            "INSERT INTO agents (id, org_id, name, slug, description, model, system_prompt, is_active,"
            " is_default, created_at, updated_at) VALUES (:id, :org_id, 'Ala', 'ala', :description,"
            " 'gpt-5.6-luna', '', true, true, :created_at, :created_at)"),
            {"id": str(uuid.uuid4()), "org_id": org_id, "description": DEFAULT_AGENT_DESCRIPTION,
             "created_at": created_at})


def downgrade() -> None:
    op.drop_index(op.f("ix_sessions_user_id"), table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("agents")
