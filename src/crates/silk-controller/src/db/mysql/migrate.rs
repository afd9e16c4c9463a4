//! Schema adoption on MySQL (control-plane §3.4), the same rules as on PostgreSQL:
//!
//! - `gorp_migrations` holds `'1'` → nothing to do (upstream's idempotent DDL re-creates a
//!   dropped `subnets`);
//! - empty database → upstream's migration `"1"` DDL for MySQL, gorp's bookkeeping table for
//!   the mysql dialect (`varchar(255)` id, `datetime` applied_at, InnoDB) and the row
//!   `('1', NOW())`;
//! - any other id → refuse to start ("unknown migration in database").
//!
//! MySQL commits DDL implicitly, so concurrent starters are serialised by the named lock
//! `GET_LOCK` instead of a transaction; a duplicate `'1'` from a starter that did not take the
//! lock (another Galera node) is tolerated. Never another row, never a column change.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::MysqlStore;
use crate::db::{with_migration_retries, MigrateError, StoreError};

/// Upstream's migration "1" for the mysql driver, verbatim (silk: controller/database/database_handler.go).
pub const SUBNETS_DDL: &str = "CREATE TABLE IF NOT EXISTS subnets (id int NOT NULL AUTO_INCREMENT, PRIMARY KEY (id), underlay_ip varchar(15) NOT NULL, overlay_subnet varchar(18) NOT NULL, overlay_hwaddr varchar(17) NOT NULL, last_renewed_at bigint NOT NULL, UNIQUE (underlay_ip), UNIQUE (overlay_subnet), UNIQUE (overlay_hwaddr));";

/// gorp's bookkeeping table for the mysql dialect (engine InnoDB, charset UTF8), as sql-migrate creates it.
pub const GORP_MIGRATIONS_DDL: &str = "create table if not exists `gorp_migrations` (`id` varchar(255) not null primary key, `applied_at` datetime) engine=InnoDB charset=UTF8;";

/// Named lock serialising concurrent starters on one server.
const MIGRATION_LOCK: &str = "silk-controller-migration";
const LOCK_WAIT: Duration = Duration::from_secs(60);

fn sql(e: impl std::fmt::Display) -> MigrateError {
    MigrateError::Sql(e.to_string())
}

impl MysqlStore {
    /// Runs the adoption rules; returns the number of migrations applied (0 or 1).
    pub async fn migrate(&self) -> Result<u32, MigrateError> {
        with_migration_retries(|| async {
            let outcome = self
                .with_conn(|c| async move { Ok(migrate_once(c).await) })
                .await;
            match outcome {
                Ok(result) => result,
                Err(StoreError::Timeout(s)) => Err(sql(format!("timed out after {s} s"))),
                Err(e) => Err(sql(e)),
            }
        })
        .await
    }
}

async fn migrate_once(mut c: Conn) -> Result<u32, MigrateError> {
    // sql-migrate's check that parseTime is on: NOW() must come back as a time value.
    let now: Option<Value> = c.exec_first("SELECT NOW()", ()).await.map_err(sql)?;
    if !matches!(now, Some(Value::Date(..))) {
        return Err(sql(format!(
            "SELECT NOW() did not return a time value: {now:?}"
        )));
    }
    let locked: Option<Option<i64>> = c
        .exec_first(
            "SELECT GET_LOCK(?, ?)",
            (MIGRATION_LOCK, LOCK_WAIT.as_secs()),
        )
        .await
        .map_err(sql)?;
    if locked != Some(Some(1)) {
        return Err(sql("could not take the migration lock"));
    }
    let result = adopt(&mut c).await;
    let released: Result<Option<Option<i64>>, _> = c
        .exec_first("SELECT RELEASE_LOCK(?)", (MIGRATION_LOCK,))
        .await;
    let applied = result?;
    released.map_err(sql)?;
    Ok(applied)
}

async fn adopt(c: &mut Conn) -> Result<u32, MigrateError> {
    c.query_drop(GORP_MIGRATIONS_DDL).await.map_err(sql)?;
    let ids: Vec<String> = c
        .query("SELECT id FROM gorp_migrations")
        .await
        .map_err(sql)?;
    if let Some(unknown) = ids.iter().find(|id| id.as_str() != "1") {
        return Err(MigrateError::UnknownMigration(unknown.clone()));
    }
    c.query_drop(SUBNETS_DDL).await.map_err(sql)?;
    if !ids.is_empty() {
        return Ok(0);
    }
    match c
        .query_drop("INSERT INTO gorp_migrations (id, applied_at) VALUES ('1', NOW())")
        .await
    {
        Ok(()) => Ok(1),
        Err(mysql_async::Error::Server(s)) if s.code == 1062 => Ok(0),
        Err(e) => Err(sql(e)),
    }
}
