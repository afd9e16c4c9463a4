//! Schema adoption (control-plane §3.4): the database looks exactly as upstream's sql-migrate
//! leaves it, so Go and Rust controllers can take turns on it.
//!
//! - `gorp_migrations` holds `'1'` → nothing to do (the `subnets` table is created if somebody
//!   dropped it, with upstream's own idempotent DDL).
//! - empty database → upstream's migration `"1"` DDL plus the row `('1', now())` in one
//!   transaction, serialised between concurrent starters by an advisory lock.
//! - any other id → refuse to start, as upstream does ("unknown migration in database").
//!
//! Never another row in `gorp_migrations`, never a column change.

use std::time::Duration;

use deadpool_postgres::Pool;

/// Upstream's migration "1", verbatim (silk-release: src/code.cloudfoundry.org/silk/controller/database/database_handler.go).
pub const SUBNETS_DDL: &str = "CREATE TABLE IF NOT EXISTS subnets (id SERIAL PRIMARY KEY, underlay_ip varchar(15) NOT NULL, overlay_subnet varchar(18) NOT NULL, overlay_hwaddr varchar(17) NOT NULL, last_renewed_at bigint NOT NULL, UNIQUE (underlay_ip), UNIQUE (overlay_subnet), UNIQUE (overlay_hwaddr));";

/// gorp's bookkeeping table for the postgres dialect, as sql-migrate creates it.
pub const GORP_MIGRATIONS_DDL: &str = r#"create table if not exists "gorp_migrations" ("id" text not null primary key, "applied_at" timestamp with time zone);"#;

/// Arbitrary key for `pg_advisory_xact_lock`, so concurrent starters migrate one at a time.
const MIGRATION_LOCK_KEY: i64 = 0x511c_c0de;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("get connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("executing migration: {0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("unknown migration in database: {0}")]
    UnknownMigration(String),
}

/// Runs the adoption rules; returns the number of migrations applied (0 or 1). Retried up to
/// 5 times, 1 s apart, as upstream.
pub async fn migrate(pool: &Pool) -> Result<u32, MigrateError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match migrate_once(pool).await {
            Ok(n) => return Ok(n),
            Err(e @ MigrateError::UnknownMigration(_)) => return Err(e),
            Err(e) if attempt >= 5 => return Err(e),
            Err(e) => {
                silk_ops::log::warn(
                    "db-migration-retry",
                    serde_json::json!({ "attempt": attempt, "error": e.to_string() }),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn migrate_once(pool: &Pool) -> Result<u32, MigrateError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    tx.batch_execute(GORP_MIGRATIONS_DDL).await?;
    let ids: Vec<String> = tx
        .query("SELECT id FROM gorp_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(unknown) = ids.iter().find(|id| id.as_str() != "1") {
        return Err(MigrateError::UnknownMigration(unknown.clone()));
    }
    tx.batch_execute(SUBNETS_DDL).await?;
    let applied = if ids.is_empty() {
        tx.execute(
            "INSERT INTO gorp_migrations (id, applied_at) VALUES ('1', now())",
            &[],
        )
        .await?;
        1
    } else {
        0
    };
    tx.commit().await?;
    Ok(applied)
}
