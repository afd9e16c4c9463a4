//! The `vcap` user: the silk-cni job's conflist makes cni-wrapper-plugin chown the container
//! metadata store to `vcap:vcap`, as on a BOSH cell. A machine without that user gets it for as
//! long as a [`VcapUser`] guard lives (counted across the process's threads, so parallel tests
//! share it) and loses it again when the last guard goes; a machine that had it keeps it.

use std::process::Command;
use std::sync::Mutex;

/// (live guards, whether we created the user).
static GUARDS: Mutex<(usize, bool)> = Mutex::new((0, false));

/// Holds the `vcap` user in place; see the module docs.
#[derive(Debug)]
pub struct VcapUser(());

fn exists() -> bool {
    Command::new("id")
        .arg("vcap")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl VcapUser {
    /// Creates the user unless it exists.
    pub fn ensure() -> std::io::Result<VcapUser> {
        let mut g = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 && !exists() {
            let st = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home"])
                .args(["--shell", "/usr/sbin/nologin", "vcap"])
                .status()?;
            if !st.success() {
                return Err(std::io::Error::other(format!("useradd vcap: {st}")));
            }
            g.1 = true;
        }
        g.0 += 1;
        Ok(VcapUser(()))
    }
}

impl Drop for VcapUser {
    fn drop(&mut self) {
        let mut g = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(1);
        if g.0 == 0 && g.1 {
            let _ = Command::new("userdel").arg("vcap").status();
            g.1 = false;
        }
    }
}
