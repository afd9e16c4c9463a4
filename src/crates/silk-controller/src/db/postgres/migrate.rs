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

use deadpool_postgres::Pool;

use crate::db::{with_migration_retries, MigrateError};

/// Upstream's migration "1", verbatim (silk-release: src/code.cloudfoundry.org/silk/controller/database/database_handler.go).
pub const SUBNETS_DDL: &str = "CREATE TABLE IF NOT EXISTS subnets (id SERIAL PRIMARY KEY, underlay_ip varchar(15) NOT NULL, overlay_subnet varchar(18) NOT NULL, overlay_hwaddr varchar(17) NOT NULL, last_renewed_at bigint NOT NULL, UNIQUE (underlay_ip), UNIQUE (overlay_subnet), UNIQUE (overlay_hwaddr));";

/// gorp's bookkeeping table for the postgres dialect, as sql-migrate creates it.
pub const GORP_MIGRATIONS_DDL: &str = r#"create table if not exists "gorp_migrations" ("id" text not null primary key, "applied_at" timestamp with time zone);"#;

/// Arbitrary key for `pg_advisory_xact_lock`, so concurrent starters migrate one at a time.
const MIGRATION_LOCK_KEY: i64 = 0x511c_c0de;

fn sql(e: impl std::fmt::Display) -> MigrateError {
    MigrateError::Sql(e.to_string())
}

/// Runs the adoption rules; returns the number of migrations applied (0 or 1).
pub async fn migrate(pool: &Pool) -> Result<u32, MigrateError> {
    with_migration_retries(|| migrate_once(pool)).await
}

async fn migrate_once(pool: &Pool) -> Result<u32, MigrateError> {
    let mut client = pool.get().await.map_err(sql)?;
    let tx = client.transaction().await.map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(sql)?;
    tx.batch_execute(GORP_MIGRATIONS_DDL).await.map_err(sql)?;
    let ids: Vec<String> = tx
        .query("SELECT id FROM gorp_migrations", &[])
        .await
        .map_err(sql)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(unknown) = ids.iter().find(|id| id.as_str() != "1") {
        return Err(MigrateError::UnknownMigration(unknown.clone()));
    }
    tx.batch_execute(SUBNETS_DDL).await.map_err(sql)?;
    let applied = if ids.is_empty() {
        tx.execute(
            "INSERT INTO gorp_migrations (id, applied_at) VALUES ('1', now())",
            &[],
        )
        .await
        .map_err(sql)?;
        1
    } else {
        0
    };
    tx.commit().await.map_err(sql)?;
    Ok(applied)
}
