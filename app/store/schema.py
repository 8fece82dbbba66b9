"""The SurrealDB schema: every table SCHEMAFULL, an index for every query we make.

Idempotent and non-destructive: tables and indexes are `IF NOT EXISTS` (an index is never
rebuilt at start; a changed index gets a new name), fields `OVERWRITE` (cheap, and lets a
new release widen a field). Nothing here removes data.
"""

from __future__ import annotations

from app.store.connection import Database

_TABLES = """
DEFINE TABLE IF NOT EXISTS user SCHEMAFULL;
DEFINE FIELD OVERWRITE email ON user TYPE string;
DEFINE FIELD OVERWRITE password_hash ON user TYPE option<string>;
DEFINE FIELD OVERWRITE credits ON user TYPE int ASSERT $value >= 0;
DEFINE FIELD OVERWRITE session_version ON user TYPE option<int>;
DEFINE FIELD OVERWRITE created_at ON user TYPE datetime DEFAULT time::now();
DEFINE FIELD OVERWRITE updated_at ON user TYPE datetime DEFAULT time::now();
DEFINE INDEX IF NOT EXISTS user_email ON user FIELDS email UNIQUE;

DEFINE TABLE IF NOT EXISTS api_token SCHEMAFULL;
DEFINE FIELD OVERWRITE token_hash ON api_token TYPE string;
DEFINE FIELD OVERWRITE user_id ON api_token TYPE string;
DEFINE FIELD OVERWRITE email ON api_token TYPE string;
DEFINE FIELD OVERWRITE created_at ON api_token TYPE datetime DEFAULT time::now();
DEFINE INDEX IF NOT EXISTS api_token_hash ON api_token FIELDS token_hash UNIQUE;

DEFINE TABLE IF NOT EXISTS credit_ledger SCHEMAFULL;
DEFINE FIELD OVERWRITE user_id ON credit_ledger TYPE string;
DEFINE FIELD OVERWRITE email ON credit_ledger TYPE string;
DEFINE FIELD OVERWRITE kind ON credit_ledger TYPE string
    ASSERT $value IN ['charge', 'refund', 'grant'];
DEFINE FIELD OVERWRITE amount ON credit_ledger TYPE int;
DEFINE FIELD OVERWRITE ref ON credit_ledger TYPE string;
DEFINE FIELD OVERWRITE job_id ON credit_ledger TYPE option<string>;
DEFINE FIELD OVERWRITE balance_after ON credit_ledger TYPE int;
DEFINE FIELD OVERWRITE note ON credit_ledger TYPE option<string>;
DEFINE FIELD OVERWRITE created_at ON credit_ledger TYPE datetime DEFAULT time::now();
DEFINE INDEX IF NOT EXISTS credit_ledger_once ON credit_ledger FIELDS ref, kind UNIQUE;
DEFINE INDEX IF NOT EXISTS credit_ledger_user ON credit_ledger FIELDS user_id, created_at;

DEFINE TABLE IF NOT EXISTS template SCHEMAFULL;
DEFINE FIELD OVERWRITE slug ON template TYPE string;
DEFINE FIELD OVERWRITE name ON template TYPE string;
DEFINE FIELD OVERWRITE model ON template TYPE string;
DEFINE FIELD OVERWRITE prompt ON template TYPE string;
DEFINE FIELD OVERWRITE negative_prompt ON template TYPE option<string>;
DEFINE FIELD OVERWRITE variables ON template TYPE array<object> FLEXIBLE;
DEFINE FIELD OVERWRITE durations ON template TYPE object FLEXIBLE;
DEFINE FIELD OVERWRITE active ON template TYPE bool DEFAULT true;
DEFINE FIELD OVERWRITE updated_at ON template TYPE datetime DEFAULT time::now();
DEFINE INDEX IF NOT EXISTS template_slug ON template FIELDS slug UNIQUE;
DEFINE INDEX IF NOT EXISTS template_active ON template FIELDS active;

DEFINE TABLE IF NOT EXISTS library_item SCHEMAFULL;
DEFINE FIELD OVERWRITE key ON library_item TYPE string;
DEFINE FIELD OVERWRITE user_id ON library_item TYPE string;
DEFINE FIELD OVERWRITE kind ON library_item TYPE string ASSERT $value IN ['image', 'video'];
DEFINE FIELD OVERWRITE content_type ON library_item TYPE string;
DEFINE FIELD OVERWRITE size ON library_item TYPE int;
DEFINE FIELD OVERWRITE job_id ON library_item TYPE option<string>;
DEFINE FIELD OVERWRITE poster_key ON library_item TYPE option<string>;
DEFINE FIELD OVERWRITE template_slug ON library_item TYPE option<string>;
DEFINE FIELD OVERWRITE template_name ON library_item TYPE option<string>;
DEFINE FIELD OVERWRITE duration ON library_item TYPE option<string>;
DEFINE FIELD OVERWRITE start_key ON library_item TYPE option<string>;
DEFINE FIELD OVERWRITE created_at ON library_item TYPE datetime DEFAULT time::now();
DEFINE INDEX IF NOT EXISTS library_item_key ON library_item FIELDS key UNIQUE;
DEFINE INDEX IF NOT EXISTS library_item_user ON library_item FIELDS user_id, created_at;

DEFINE TABLE IF NOT EXISTS idempotency SCHEMAFULL;
DEFINE FIELD OVERWRITE user_id ON idempotency TYPE string;
DEFINE FIELD OVERWRITE key ON idempotency TYPE string;
DEFINE FIELD OVERWRITE request_hash ON idempotency TYPE string;
DEFINE FIELD OVERWRITE job_id ON idempotency TYPE string;
DEFINE FIELD OVERWRITE created_at ON idempotency TYPE datetime DEFAULT time::now();
DEFINE INDEX IF NOT EXISTS idempotency_created ON idempotency FIELDS created_at;

DEFINE TABLE IF NOT EXISTS video_job SCHEMAFULL;
DEFINE FIELD OVERWRITE user_id ON video_job TYPE string;
DEFINE FIELD OVERWRITE email ON video_job TYPE string;
DEFINE FIELD OVERWRITE template_id ON video_job TYPE string;
DEFINE FIELD OVERWRITE model ON video_job TYPE string;
DEFINE FIELD OVERWRITE prompt ON video_job TYPE string;
DEFINE FIELD OVERWRITE negative_prompt ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE start_key ON video_job TYPE string;
DEFINE FIELD OVERWRITE duration ON video_job TYPE string;
DEFINE FIELD OVERWRITE variables ON video_job TYPE object FLEXIBLE;
DEFINE FIELD OVERWRITE credits ON video_job TYPE int;
DEFINE FIELD OVERWRITE status ON video_job TYPE string
    ASSERT $value IN ['pending', 'processing', 'completed', 'failed'];
DEFINE FIELD OVERWRITE phase ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE error ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE refunded ON video_job TYPE bool DEFAULT false;
DEFINE FIELD OVERWRITE result_key ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE idempotency_key ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE fal_request_id ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE fal_status_url ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE fal_response_url ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE fal_cancel_url ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE provider_status ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE queue_position ON video_job TYPE option<int>;
DEFINE FIELD OVERWRITE progress ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE video_url ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE lease_owner ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE lease_until ON video_job TYPE option<datetime>;
DEFINE FIELD OVERWRITE next_check_at ON video_job TYPE option<datetime>;
DEFINE FIELD OVERWRITE attempts ON video_job TYPE int DEFAULT 0;
DEFINE FIELD OVERWRITE transfer_attempts ON video_job TYPE int DEFAULT 0;
DEFINE FIELD OVERWRITE resends ON video_job TYPE int DEFAULT 0;
DEFINE FIELD OVERWRITE cancel_requested ON video_job TYPE bool DEFAULT false;
DEFINE FIELD OVERWRITE deadline_at ON video_job TYPE datetime;
DEFINE FIELD OVERWRITE created_at ON video_job TYPE datetime DEFAULT time::now();
DEFINE FIELD OVERWRITE updated_at ON video_job TYPE datetime DEFAULT time::now();
DEFINE FIELD OVERWRITE completed_at ON video_job TYPE option<datetime>;
DEFINE FIELD OVERWRITE webhook_url ON video_job TYPE option<string>;
DEFINE FIELD OVERWRITE webhook_events ON video_job TYPE option<array<string>>;
DEFINE INDEX IF NOT EXISTS video_job_user_created ON video_job FIELDS email, created_at;
DEFINE INDEX IF NOT EXISTS video_job_status_check ON video_job FIELDS status, next_check_at;
DEFINE INDEX IF NOT EXISTS video_job_fal_request ON video_job FIELDS fal_request_id;
DEFINE INDEX IF NOT EXISTS video_job_deadline ON video_job FIELDS status, deadline_at;
DEFINE INDEX IF NOT EXISTS video_job_cancel_owed ON video_job FIELDS cancel_requested;
DEFINE INDEX IF NOT EXISTS video_job_phase_lease ON video_job FIELDS phase, lease_until;

DEFINE TABLE IF NOT EXISTS webhook_endpoint SCHEMAFULL;
DEFINE FIELD OVERWRITE user_id ON webhook_endpoint TYPE string;
DEFINE FIELD OVERWRITE email ON webhook_endpoint TYPE string;
DEFINE FIELD OVERWRITE url ON webhook_endpoint TYPE string;
DEFINE FIELD OVERWRITE secret_sealed ON webhook_endpoint TYPE string;
DEFINE FIELD OVERWRITE created_at ON webhook_endpoint TYPE datetime DEFAULT time::now();
DEFINE FIELD OVERWRITE updated_at ON webhook_endpoint TYPE datetime DEFAULT time::now();

DEFINE TABLE IF NOT EXISTS webhook_delivery SCHEMAFULL;
DEFINE FIELD OVERWRITE job_id ON webhook_delivery TYPE string;
DEFINE FIELD OVERWRITE user_id ON webhook_delivery TYPE string;
DEFINE FIELD OVERWRITE type ON webhook_delivery TYPE string
    ASSERT $value IN ['video.processing', 'video.completed', 'video.failed'];
DEFINE FIELD OVERWRITE url ON webhook_delivery TYPE string;
DEFINE FIELD OVERWRITE job ON webhook_delivery TYPE object FLEXIBLE;
DEFINE FIELD OVERWRITE state ON webhook_delivery TYPE string
    ASSERT $value IN ['pending', 'delivered', 'failed'];
DEFINE FIELD OVERWRITE attempts ON webhook_delivery TYPE int DEFAULT 0;
DEFINE FIELD OVERWRITE last_status ON webhook_delivery TYPE option<int>;
DEFINE FIELD OVERWRITE last_error ON webhook_delivery TYPE option<string>;
DEFINE FIELD OVERWRITE last_attempt_at ON webhook_delivery TYPE option<datetime>;
DEFINE FIELD OVERWRITE next_attempt_at ON webhook_delivery TYPE option<datetime>;
DEFINE FIELD OVERWRITE lease_owner ON webhook_delivery TYPE option<string>;
DEFINE FIELD OVERWRITE lease_until ON webhook_delivery TYPE option<datetime>;
DEFINE FIELD OVERWRITE created_at ON webhook_delivery TYPE datetime DEFAULT time::now();
DEFINE FIELD OVERWRITE delivered_at ON webhook_delivery TYPE option<datetime>;
DEFINE INDEX IF NOT EXISTS webhook_delivery_job ON webhook_delivery FIELDS job_id;
DEFINE INDEX IF NOT EXISTS webhook_delivery_due ON webhook_delivery FIELDS state, next_attempt_at;
"""


def migrate(db: Database) -> None:
    """Create or update the schema; safe to run at every start and concurrently."""
    db.query(_TABLES)
