"""The cache generation: one counter the schema bumps whenever a cached call context could go stale

Every process keeps the callers' contexts (storage/gateway.py `CallContext`) in memory and checks this
counter before using one (storage/generation.py, services/context_cache.py). The triggers bump it in
the same transaction as the change, so no code path can change a key, an agent or an org's deposits
without the caches noticing on their next call. Writes that every call makes (balances, holds,
last-used times, key verification) leave it alone: they would empty every cache on every call.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The columns whose change bumps the generation, per table. The columns left out are written by the
# hot path or the key check and are not part of what admission decides: api_keys.last_used_at,
# byok_keys.last_used_at/last_verified_at/verification, and orgs' balance, holds, names and payment
# markers. tests/integration/test_migrations.py checks every other column of api_keys and byok_keys
# is listed, so a new column cannot silently escape.
WATCHED_UPDATES: dict[str, tuple[str, ...]] = {
    "api_keys": ("id", "org_id", "user_id", "name", "prefix", "key_hash", "scopes", "created_at",
                 "revoked_at"),
    "byok_keys": ("id", "org_id", "provider", "ciphertext", "kek_version", "masked_key", "status",
                  "created_by", "created_at", "deactivated_at"),
    "agents": ("id", "org_id", "name", "slug", "description", "model", "system_prompt", "is_active",
               "is_default", "created_at", "updated_at", "deleted_at"),
    "orgs": ("slug", "cumulative_deposits_cents", "auto_topup_enabled", "auto_topup_threshold_cents"),
}
# Tables whose inserted or deleted rows bump it (an org's insert cannot matter: no context of an org
# that does not exist is ever cached; its delete is included for completeness).
WATCHED_INSERTS = ("api_keys", "byok_keys", "agents")
WATCHED_DELETES = ("api_keys", "byok_keys", "agents", "orgs")

_BUMP = "UPDATE cache_generation SET value = value + 1 WHERE id = 1"


def triggers() -> list[tuple[str, str]]:
    """(trigger, table) for every trigger this migration creates; the names are the same on both databases."""
    return ([(f"cache_generation_{table}_insert", table) for table in WATCHED_INSERTS]
            + [(f"cache_generation_{table}_delete", table) for table in WATCHED_DELETES]
            + [(f"cache_generation_{table}_update", table) for table in WATCHED_UPDATES])


def _changed(columns: tuple[str, ...], distinct: str) -> str:
    # Compared value by value, null-safe: an UPDATE that rewrites a column with its own value (every
    # usage charge does `cumulative_deposits_cents = cumulative_deposits_cents + 0`) changes nothing.
    return " OR ".join(f"OLD.{column} {distinct} NEW.{column}" for column in columns)


def _sqlite_upgrade() -> None:
    for table in WATCHED_INSERTS:
        op.execute(f"CREATE TRIGGER cache_generation_{table}_insert AFTER INSERT ON {table} "
                   f"BEGIN {_BUMP}; END")
    for table in WATCHED_DELETES:
        op.execute(f"CREATE TRIGGER cache_generation_{table}_delete AFTER DELETE ON {table} "
                   f"BEGIN {_BUMP}; END")
    for table, columns in WATCHED_UPDATES.items():
        op.execute(f"CREATE TRIGGER cache_generation_{table}_update AFTER UPDATE ON {table} "
                   f"WHEN {_changed(columns, 'IS NOT')} BEGIN {_BUMP}; END")


def _postgresql_upgrade() -> None:
    op.execute("CREATE FUNCTION cache_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN {_BUMP}; RETURN NULL; END $$")
    run = "FOR EACH ROW EXECUTE FUNCTION cache_generation_bump()"
    for table in WATCHED_INSERTS:
        op.execute(f"CREATE TRIGGER cache_generation_{table}_insert AFTER INSERT ON {table} {run}")
    for table in WATCHED_DELETES:
        op.execute(f"CREATE TRIGGER cache_generation_{table}_delete AFTER DELETE ON {table} {run}")
    for table, columns in WATCHED_UPDATES.items():
        op.execute(f"CREATE TRIGGER cache_generation_{table}_update AFTER UPDATE ON {table} "
                   f"FOR EACH ROW WHEN ({_changed(columns, 'IS DISTINCT FROM')}) "
                   "EXECUTE FUNCTION cache_generation_bump()")


def upgrade() -> None:
    op.create_table(
        "cache_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_cache_generation_one_row"),
    )
    op.execute("INSERT INTO cache_generation (id, value) VALUES (1, 0)")
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_upgrade()
    else:
        _postgresql_upgrade()


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name != "sqlite"
    for name, table in triggers():
        op.execute(f"DROP TRIGGER {name} ON {table}" if postgresql else f"DROP TRIGGER {name}")
    if postgresql:
        op.execute("DROP FUNCTION cache_generation_bump()")
    op.drop_table("cache_generation")
