//! `silk-datastore-syncer -n <secs> -gardenNetwork <unix|tcp> -gardenAddr <addr> -silkFile <path>
//! -silkFileOwner <user> -silkFileGroup <group> -logLevel <level>` (upstream's flags).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use silk_dataplane::datastore::MetadataStore;
use silk_datastore_syncer::{garden::Garden, sync};

fn log(event: &str, data: serde_json::Value) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    println!(
        "{}",
        serde_json::json!({"timestamp": format!("{ts:.9}"), "source": "cfnetworking.silk-datastore-syncer",
                           "message": format!("cfnetworking.silk-datastore-syncer.{event}"), "log_level": 1, "data": data})
    );
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.windows(2)
        .find(|w| w[0] == format!("-{name}") || w[0] == format!("--{name}"))
        .map(|w| w[1].clone())
}

fn owner(user: &str, group: &str) -> anyhow::Result<Option<(u32, u32)>> {
    if user.is_empty() || group.is_empty() {
        return Ok(None);
    }
    let u = nix::unistd::User::from_name(user)?.with_context(|| format!("unknown user {user}"))?;
    let g =
        nix::unistd::Group::from_name(group)?.with_context(|| format!("unknown group {group}"))?;
    Ok(Some((u.uid.as_raw(), g.gid.as_raw())))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let interval: u64 = flag(&args, "n")
        .unwrap_or_else(|| "30".into())
        .parse()
        .context("-n")?;
    if interval == 0 {
        bail!("-n must be at least 1");
    }
    let garden = Garden {
        network: flag(&args, "gardenNetwork").unwrap_or_else(|| "unix".into()),
        address: flag(&args, "gardenAddr")
            .unwrap_or_else(|| "/var/vcap/data/garden/garden.sock".into()),
        timeout: Duration::from_secs(30),
    };
    let store = MetadataStore::new(
        flag(&args, "silkFile")
            .unwrap_or_else(|| "/var/vcap/data/container-metadata/store.json".into()),
        owner(
            &flag(&args, "silkFileOwner").unwrap_or_default(),
            &flag(&args, "silkFileGroup").unwrap_or_default(),
        )?,
    );
    // Wait for garden (bounded retries, then fail so monit restarts us).
    let mut tries = 0;
    while let Err(e) = garden.ping() {
        tries += 1;
        if tries > 60 {
            bail!("garden did not answer ping: {e}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    log("started", serde_json::json!({"interval_seconds": interval}));
    loop {
        std::thread::sleep(Duration::from_secs(interval));
        if let Err(e) = cycle(&garden, &store) {
            log(
                "sync-failed",
                serde_json::json!({"error": format!("{e:#}")}),
            );
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
            Err(e) => log(
                "get-properties-failed",
                serde_json::json!({"handle": h, "error": e.to_string()}),
            ),
        }
    }
    let entries = store.read_all()?;
    let (updates, missing) = sync::plan(&props, &entries);
    for h in missing {
        log(
            "skipping-container-not-found-in-networking-store",
            serde_json::json!({"handle": h}),
        );
    }
    for (handle, meta) in updates {
        store
            .update_metadata(&handle, meta)
            .with_context(|| format!("update {handle}"))?;
        log("updated-log-config", serde_json::json!({"handle": handle}));
    }
    Ok(())
}
