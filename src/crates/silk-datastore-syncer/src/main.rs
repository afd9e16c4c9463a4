//! `silk-datastore-syncer -n <secs> -gardenNetwork <unix|tcp> -gardenAddr <addr> -silkFile <path>
//! -silkFileOwner <user> -silkFileGroup <group> -logLevel <level>` (upstream's flags, read by
//! [`silk_datastore_syncer::config`]). Exits 64 on invalid flags or an unknown owner, before
//! garden is dialled or the store touched; 1 when garden never answers.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use silk_dataplane::datastore::MetadataStore;
use silk_datastore_syncer::{config::Config, garden::Garden, sync};
use silk_ops::log::{error, fatal, info};

fn owner(names: &Option<(String, String)>) -> anyhow::Result<Option<(u32, u32)>> {
    let Some((user, group)) = names else {
        return Ok(None);
    };
    let u = nix::unistd::User::from_name(user)?.with_context(|| format!("unknown user {user}"))?;
    let g =
        nix::unistd::Group::from_name(group)?.with_context(|| format!("unknown group {group}"))?;
    Ok(Some((u.uid.as_raw(), g.gid.as_raw())))
}

fn main() -> ExitCode {
    let (cfg, owner) = match Config::from_args(std::env::args())
        .map_err(anyhow::Error::from)
        .and_then(|c| owner(&c.silk_file_owner).map(|o| (c, o)))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cfnetworking.silk-datastore-syncer error: {e:#}");
            return ExitCode::from(64);
        }
    };
    // Upstream logs through lager.NewWriterSink: the epoch format.
    silk_ops::log::init_with(
        "cfnetworking",
        "silk-datastore-syncer",
        cfg.log_level,
        silk_ops::log::Format::Epoch,
        Box::new(std::io::stdout()),
    );
    let garden = Garden {
        network: cfg.garden_network.clone(),
        address: cfg.garden_addr.clone(),
        timeout: Duration::from_secs(30),
    };
    let store = MetadataStore::new(cfg.silk_file.clone(), owner);
    // Wait for garden (bounded retries, then fail so monit restarts us).
    let mut tries = 0;
    while let Err(e) = garden.ping() {
        tries += 1;
        if tries > 60 {
            fatal("garden-ping", json!({"error": e.to_string()}));
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    info(
        "started",
        json!({"interval_seconds": cfg.interval.as_secs()}),
    );
    loop {
        std::thread::sleep(cfg.interval);
        if let Err(e) = cycle(&garden, &store) {
            error("sync-failed", json!({"error": format!("{e:#}")}));
        }
    }
}

fn cycle(garden: &Garden, store: &MetadataStore) -> anyhow::Result<()> {
    let mut props = BTreeMap::new();
    for h in garden.containers()? {
        match garden.properties(&h) {
            Ok(p) => {
                props.insert(h, p);
            }
            Err(e) => error(
                "get-properties-failed",
                json!({"handle": h, "error": e.to_string()}),
            ),
        }
    }
    let entries = store.read_all()?;
    let (updates, missing) = sync::plan(&props, &entries);
    for h in missing {
        info(
            "skipping-container-not-found-in-networking-store",
            json!({"handle": h}),
        );
    }
    for (handle, meta) in updates {
        store
            .update_metadata(&handle, meta)
            .with_context(|| format!("update {handle}"))?;
        info("updated-log-config", json!({"handle": handle}));
    }
    Ok(())
}
