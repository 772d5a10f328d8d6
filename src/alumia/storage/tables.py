"""The database schema (SQLAlchemy Core). Money columns are integer microcents or cents, never floats."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = DateTime(timezone=True)

orgs = Table(
    "orgs", metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("balance_microcents", BigInteger, nullable=False, server_default=text("0")),
    # The sum of open holds; the balance available to a new platform call is balance − held.
    Column("held_microcents", BigInteger, nullable=False, server_default=text("0")),
    Column("cumulative_deposits_cents", BigInteger, nullable=False, server_default=text("0")),
    Column("auto_topup_enabled", Boolean, nullable=False, server_default=text("false")),
    Column("auto_topup_threshold_cents", BigInteger, nullable=False, server_default=text("500")),
    Column("auto_topup_amount_cents", BigInteger, nullable=False, server_default=text("2500")),
    Column("created_at", Timestamp, nullable=False),
)

users = Table(
    "users", metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

memberships = Table(
    "memberships", metadata,
    Column("org_id", String(36), ForeignKey("orgs.id"), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False, index=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(12), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("last_used_at", Timestamp),
    Column("revoked_at", Timestamp),
)

byok_keys = Table(
    "byok_keys", metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("kek_version", Integer, nullable=False),
    Column("masked_key", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    # verified | restricted (valid, but the provider refused access: 403) | unverified (not reachable)
    Column("verification", String(16), nullable=False, server_default=text("'unverified'")),
    Column("last_verified_at", Timestamp),
    Column("created_by", String(36), ForeignKey("users.id"), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("deactivated_at", Timestamp),
    Column("last_used_at", Timestamp),
    # One active key per provider per org; the routing query relies on it.
    Index("uq_byok_keys_active", "org_id", "provider", unique=True,
          sqlite_where=text("status = 'active'"), postgresql_where=text("status = 'active'")),
)

kek_checks = Table(
    "kek_checks", metadata,
    Column("version", Integer, primary_key=True),
    Column("check_value", LargeBinary, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

ledger_entries = Table(
    "ledger_entries", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False),
    Column("type", String(24), nullable=False),
    Column("amount_microcents", BigInteger, nullable=False),
    Column("balance_after_microcents", BigInteger, nullable=False),
    Column("description", String(300), nullable=False),
    Column("request_id", String(40)),
    Column("idempotency_key", String(200), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("idempotency_key"),
    Index("ix_ledger_entries_org_id_id", "org_id", "id"),
)

usage_records = Table(
    "usage_records", metadata,
    Column("id", String(40), primary_key=True),  # the request id, X-Alumia-Request-Id
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False),
    Column("api_key_id", String(36), ForeignKey("api_keys.id")),
    Column("agent_id", String(36)),
    Column("model", String(120), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("route", String(16), nullable=False),
    Column("byok", Boolean, nullable=False),
    Column("byok_key_id", String(36), ForeignKey("byok_keys.id")),
    Column("stream", Boolean, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    # True when the provider reported no usage (a cut stream) and the tokens were estimated.
    Column("usage_estimated", Boolean, nullable=False, server_default=text("false")),
    Column("cost_microcents", BigInteger, nullable=False),
    Column("fee_microcents", BigInteger, nullable=False),
    Column("charged_microcents", BigInteger, nullable=False),
    Column("status", String(32), nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("error_code", String(64)),
    Column("latency_ms", Integer, nullable=False),
    # The front door: chat, messages, responses or embeddings (domain/call_record.py `Api`); `unknown`
    # on rows from before migration 0011. Before created_at, which the writers bind last.
    Column("api", String(16), nullable=False, server_default="unknown"),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_usage_records_org_id_created_at", "org_id", "created_at"),
)

holds = Table(
    "holds", metadata,
    Column("id", String(40), primary_key=True),  # the request id of the call it reserves for
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False),
    Column("amount_microcents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # open | settled | released | expired
    Column("charged_microcents", BigInteger),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Column("closed_at", Timestamp),
    Index("ix_holds_status_expires_at", "status", "expires_at"),
)

agents = Table(
    "agents", metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("slug", String(64), nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("model", String(120), nullable=False),
    Column("system_prompt", Text, nullable=False, server_default=text("''")),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("deleted_at", Timestamp),
    UniqueConstraint("org_id", "slug", name="uq_agents_org_id_slug"),
)

sessions = Table(
    "sessions", metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 of the cookie value
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
)

audit_entries = Table(
    "audit_entries", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False, index=True),
    Column("actor_user_id", String(36), ForeignKey("users.id")),
    Column("action", String(40), nullable=False),
    Column("target_id", String(36)),
    Column("provider", String(32)),
    Column("masked_key", String(32)),
    Column("created_at", Timestamp, nullable=False),
)

# One row per accepted infrastructure usage event (services/meters.py), written in the same
# transaction as its `service_charge` ledger entry (idempotency key `meter:<org id>:<event id>`).
meter_events = Table(
    "meter_events", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False),
    Column("event_id", String(100), nullable=False),  # the reporter's id, unique per org
    Column("service", String(24), nullable=False),
    Column("quantity", String(40), nullable=False),  # exact decimal text, e.g. "1.5"
    Column("unit_price_microcents", BigInteger, nullable=False),
    Column("charged_microcents", BigInteger, nullable=False),
    Column("occurred_at", Timestamp, nullable=False),
    Column("agent_id", String(36)),
    Column("project_id", String(100)),
    Column("payload_sha256", String(64), nullable=False),
    Column("api_key_id", String(36), ForeignKey("api_keys.id")),
    Column("created_at", Timestamp, nullable=False),  # when charged: the ledger entry's created_at
    UniqueConstraint("org_id", "event_id", name="uq_meter_events_org_id_event_id"),
    Index("ix_meter_events_org_id_created_at", "org_id", "created_at"),
)

# Stripe deposits. Amounts are integer cents, as Stripe counts them.
stripe_payments = Table(
    "stripe_payments", metadata,
    Column("id", String(255), primary_key=True),  # the Checkout Session id (cs_...)
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False, index=True),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # pending | paid | mismatch
    Column("payment_intent_id", String(255), unique=True),  # set when the payment completes
    Column("paid_cents", BigInteger, nullable=False, server_default=text("0")),
    Column("refunded_cents", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

stripe_events = Table(
    "stripe_events", metadata,
    Column("id", String(255), primary_key=True),  # the event id (evt_...): each is applied once
    Column("type", String(100), nullable=False),
    Column("payload_sha256", String(64), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("received_at", Timestamp, nullable=False),
)

stripe_refunds = Table(
    "stripe_refunds", metadata,
    Column("id", String(255), primary_key=True),  # the refund id (re_...): each is applied once
    Column("payment_intent_id", String(255), index=True),
    Column("amount_cents", BigInteger, nullable=False),
    # unmatched: its payment is not (yet) credited here; applied: reversed, applied_cents of it.
    Column("status", String(16), nullable=False),
    Column("applied_cents", BigInteger),
    Column("created_at", Timestamp, nullable=False),
    Column("applied_at", Timestamp),
)
# Besides the statuses noted above: a payment may also end `expired` (checkout.session.expired) or `failed`
# (checkout.session.async_payment_failed), never credited; a refund may end `failed` (refund.failed, or
# refund.updated / charge.refund.updated failed or canceled), what it reversed credited back once.

# Auto top-up: the card saved by a Checkout deposit (`setup_future_usage`), and
# the marker of the one off-session top-up in flight (set by a conditional UPDATE, cleared by its webhook,
# a decline, or after `auto_topup_in_flight_seconds`).
orgs.append_column(Column("stripe_customer_id", String(255)))
orgs.append_column(Column("stripe_payment_method_id", String(255)))
orgs.append_column(Column("auto_topup_attempt_id", String(36)))
orgs.append_column(Column("auto_topup_started_at", Timestamp))

# The cache generation (migration 0009): one row whose value triggers on api_keys, byok_keys, agents and
# orgs bump in the same transaction as any change a cached call context depends on. Each process reads it
# before using its cached contexts (storage/generation.py). A migration that rebuilds one of those tables
# on SQLite (batch mode) drops its triggers and must create them again; test_migrations.py checks they
# are all there at head.
cache_generation = Table(
    "cache_generation", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="ck_cache_generation_one_row"),
)

# Stored Responses (migration 0010): the Response object and its input items of each `POST /v1/responses`
# made with `store` (the default), scoped to the org that made it, for `previous_response_id`, GET, the
# input item list and DELETE. Both JSON texts are the org's data: never logged, deleted with the row.
# `created_at` against ALUMIA_RESPONSES_RETENTION_DAYS decides when a row counts as gone (the sweeper
# deletes it; reads treat it as absent before then).
stored_responses = Table(
    "stored_responses", metadata,
    Column("id", String(64), primary_key=True),  # resp_...
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False),
    Column("previous_response_id", String(64)),
    Column("response", Text, nullable=False),  # the Response object, JSON
    Column("input_items", Text, nullable=False),  # this request's input items, JSON
    Column("created_at", Timestamp, nullable=False),
    Index("ix_stored_responses_created_at", "created_at"),
)
