//! Every ADD and DEL branch through recording ports: the order of side effects, the number of
//! restores, what a failure undoes. No root, no binaries.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use serde_json::Value;
use silk_cni_skel::ErrorCode;
use silk_dataplane::datastore::{Container as StoreEntry, Entries, StoreError};
use silk_dataplane::iptables::{IptablesError, LockGuard, Table};

use super::*;
use crate::plan::tests::{del_facts, netout_lines, request, result, HANDLE, NETOUT, REJECT};
use crate::ports::AgentAnswer;

/// What every port did, in order.
type Journal = Arc<Mutex<Vec<String>>>;

fn note(j: &Journal, s: impl Into<String>) {
    j.lock().unwrap().push(s.into());
}

/// iptables, one text per family: `save` answers it; a restore that deletes a rule the text
/// does not hold, or removes a chain a rule of another chain still targets, fails and changes
/// nothing (as iptables-restore's commit does); a restore with appends replaces the text
/// (enough for the DEL planner to find what the ADD wrote), one that removes chains empties it.
/// `fail_restore` fails every restore.
struct FakeIpt {
    j: Journal,
    tables: Mutex<std::collections::HashMap<Family, String>>,
    fail_restore: bool,
    restores: Mutex<Vec<(Family, String)>>,
}

impl FakeIpt {
    fn text(&self, family: Family) -> String {
        self.tables
            .lock()
            .unwrap()
            .get(&family)
            .cloned()
            .unwrap_or_default()
    }

    fn set(&self, family: Family, text: &str) {
        self.tables.lock().unwrap().insert(family, text.to_string());
    }

    /// Why iptables would refuse `payload` on `text`.
    fn refusal(text: &str, payload: &str) -> Option<String> {
        let declared: Vec<&str> = payload
            .lines()
            .filter_map(|l| l.strip_prefix(':')?.split_whitespace().next())
            .collect();
        for l in payload.lines() {
            if let Some(rule) = l.strip_prefix("-D ") {
                if !text.lines().any(|t| t.strip_prefix("-A ") == Some(rule)) {
                    return Some(format!(
                        "{l}: Bad rule (does a matching rule exist in that chain?)"
                    ));
                }
            }
            if let Some(chain) = l.strip_prefix("-X ") {
                let referenced = text.lines().any(|t| {
                    let Some(rule) = t.strip_prefix("-A ") else {
                        return false;
                    };
                    let owner = rule.split_whitespace().next().unwrap_or("");
                    let deleted = payload.contains(&format!("-D {rule}\n"));
                    !declared.contains(&owner)
                        && !deleted
                        && (rule.ends_with(&format!(" -j {chain}"))
                            || rule.ends_with(&format!(" -g {chain}")))
                });
                if referenced {
                    return Some(format!("{l}: Device or resource busy"));
                }
            }
        }
        None
    }
}

impl Iptables for FakeIpt {
    fn lock(&self) -> Result<LockGuard, IptablesError> {
        // The recording backend's guard holds nothing.
        silk_dataplane::iptables::RecordingIptables::default().lock()
    }
    fn save(&self, family: Family, _t: Option<Table>) -> Result<String, IptablesError> {
        note(&self.j, format!("save {family:?}"));
        Ok(self.text(family))
    }
    fn restore(&self, family: Family, payload: &str) -> Result<(), IptablesError> {
        note(&self.j, format!("restore {family:?}"));
        self.restores
            .lock()
            .unwrap()
            .push((family, payload.to_string()));
        let refused = if self.fail_restore {
            Some("line 3 failed".to_string())
        } else {
            FakeIpt::refusal(&self.text(family), payload)
        };
        if let Some(stderr) = refused {
            return Err(IptablesError::Failed {
                bin: "iptables-restore",
                stderr,
            });
        }
        if payload.contains("\n-X ") {
            self.set(family, "");
        } else if payload.contains("\n-A ") {
            self.set(family, payload);
        }
        Ok(())
    }
}

struct FakeDelegate {
    j: Journal,
    add: Result<CniResult, CniError>,
    fail_del: bool,
}

impl Delegate for FakeDelegate {
    fn add(&self) -> Result<CniResult, CniError> {
        note(&self.j, "delegate add");
        self.add.clone()
    }
    fn del(&self) -> Result<(), CniError> {
        note(&self.j, "delegate del");
        if self.fail_del {
            return Err(CniError::internal("remove veth: device busy"));
        }
        Ok(())
    }
}

/// Answers by path: the probe, the policy poll, the forced sync and the cleanup each have
/// their answer; `None` is "connection refused".
struct FakeAgent {
    j: Journal,
    probe: Option<u16>,
    poll: Option<u16>,
    sync: Option<u16>,
    cleanup: Option<u16>,
}

impl PolicyAgent for FakeAgent {
    fn get(&self, path: &str) -> Result<AgentAnswer, CniError> {
        note(&self.j, format!("GET {path}"));
        let status = if path == "/force-asgs-for-container" {
            self.probe
        } else if path.starts_with("/force-asgs-for-container?") {
            self.sync
        } else if path == "/force-policy-poll-cycle" {
            self.poll
        } else {
            self.cleanup
        };
        let status = status.ok_or_else(|| {
            CniError::internal("connect 127.0.0.1:8722: Connection refused (os error 111)")
        })?;
        Ok(AgentAnswer {
            status,
            body: match status {
                405 => "ASG syncing has been disabled administratively".into(),
                200 => String::new(),
                s => format!("failed with {s}"),
            },
        })
    }
}

/// The metadata store in memory. `appears_on_add` is an entry another ADD writes between our
/// read and our write.
#[derive(Default)]
struct FakeStore {
    j: Journal,
    entries: Mutex<Entries>,
    corrupt: bool,
    fail_write: bool,
    appears_on_add: Option<StoreEntry>,
}

fn decode_error() -> StoreError {
    StoreError::Decode(serde_json::from_str::<Value>("b").unwrap_err())
}

impl ContainerStore for FakeStore {
    fn read_all(&self) -> Result<Entries, StoreError> {
        note(&self.j, "store read");
        if self.corrupt {
            return Err(decode_error());
        }
        Ok(self.entries.lock().unwrap().clone())
    }
    fn add_unless(
        &self,
        entry: &StoreEntry,
        refuse: &dyn Fn(&Entries) -> Option<String>,
    ) -> Result<Result<(), String>, StoreError> {
        note(&self.j, format!("store add {}", entry.handle));
        if self.fail_write {
            return Err(StoreError::Write(std::io::Error::other("disk full")));
        }
        let mut e = self.entries.lock().unwrap();
        if let Some(other) = &self.appears_on_add {
            e.insert(other.handle.clone(), other.clone());
        }
        if let Some(reason) = refuse(&e) {
            return Ok(Err(reason));
        }
        e.insert(entry.handle.clone(), entry.clone());
        Ok(Ok(()))
    }
    fn delete(&self, handle: &str) -> Result<Option<StoreEntry>, StoreError> {
        note(&self.j, format!("store delete {handle}"));
        if self.corrupt {
            return Err(decode_error());
        }
        Ok(self.entries.lock().unwrap().remove(handle))
    }
}

struct World {
    j: Journal,
    ipt: FakeIpt,
    delegate: FakeDelegate,
    agent: FakeAgent,
    store: FakeStore,
    facts: Option<crate::plan::DelFacts>,
}

impl World {
    /// A cell whose agent syncs ASGs (`dynamic`) or not, the delegate handing out 10.255.30.4.
    fn new(dynamic: bool) -> World {
        let j = Journal::default();
        let (probe, sync) = if dynamic { (400, 200) } else { (405, 405) };
        World {
            ipt: FakeIpt {
                j: j.clone(),
                tables: Mutex::default(),
                fail_restore: false,
                restores: Mutex::new(Vec::new()),
            },
            delegate: FakeDelegate {
                j: j.clone(),
                add: Ok(result(&["10.255.30.4/32"])),
                fail_del: false,
            },
            agent: FakeAgent {
                j: j.clone(),
                probe: Some(probe),
                poll: Some(200),
                sync: Some(sync),
                cleanup: Some(if dynamic { 200 } else { 405 }),
            },
            store: FakeStore {
                j: j.clone(),
                ..FakeStore::default()
            },
            facts: Some(del_facts()),
            j,
        }
    }

    fn ports(&self) -> Ports<'_> {
        Ports {
            ipt: &self.ipt,
            delegate: &self.delegate,
            agent: &self.agent,
            store: &self.store,
        }
    }

    fn add(&self) -> Result<Added, AddFailure> {
        self.add_with(&request(HANDLE, false, false))
    }

    fn add_with(&self, req: &AddRequest) -> Result<Added, AddFailure> {
        add(self.ports(), req)
    }

    fn del(&self, prev: Option<&CniResult>) -> (Deleted, Result<(), CniError>) {
        del(self.ports(), HANDLE, prev, false, &|| self.facts.clone())
    }

    fn journal(&self) -> Vec<String> {
        std::mem::take(&mut *self.j.lock().unwrap())
    }

    /// A DEL that succeeds with no problem; its journal without the delegate's DEL.
    fn del_ok(&self, prev: Option<&CniResult>) -> Vec<String> {
        let (done, r) = self.del(prev);
        r.unwrap();
        assert!(done.problems.is_empty(), "{:?}", done.problems);
        self.journal_beside_delegate()
    }

    /// The journal without the delegate's DEL, which runs beside the rules (its place among
    /// them is not fixed).
    fn journal_beside_delegate(&self) -> Vec<String> {
        let mut j = self.journal();
        j.retain(|s| s != "delegate del");
        j
    }

    fn restores(&self) -> Vec<(Family, String)> {
        std::mem::take(&mut *self.ipt.restores.lock().unwrap())
    }

    fn stored(&self) -> Vec<String> {
        self.store.entries.lock().unwrap().keys().cloned().collect()
    }
}

const PROBE: &str = "GET /force-asgs-for-container";

/// An ADD on a cell set up by `setup`, which must fail.
fn failed_add(dynamic: bool, setup: impl FnOnce(&mut World)) -> (World, AddFailure) {
    let mut w = World::new(dynamic);
    setup(&mut w);
    let f = w.add().unwrap_err();
    (w, f)
}

/// The journal with the mode query put before the delegate's ADD: the two run at once.
fn in_order(mut j: Vec<String>) -> Vec<String> {
    if let (Some(p), Some(d)) = (
        j.iter().position(|s| s == PROBE),
        j.iter().position(|s| s == "delegate add"),
    ) {
        if p > d {
            j.swap(p, d);
        }
    }
    j
}
const POLL: &str = "GET /force-policy-poll-cycle";

fn sync_call() -> String {
    format!("GET /force-asgs-for-container?container={HANDLE}")
}

fn cleanup_call() -> String {
    format!("GET /force-orphaned-asgs-cleanup?container={HANDLE}")
}

fn store_add() -> String {
    format!("store add {HANDLE}")
}

/// An ADD's journal up to its store entry.
fn until_store_add() -> Vec<String> {
    vec![
        "store read".to_string(),
        PROBE.into(),
        "delegate add".into(),
        store_add(),
    ]
}

fn store_delete() -> String {
    format!("store delete {HANDLE}")
}

// === ADD, success ===

#[test]
fn add_in_either_mode_is_one_restore_between_store_and_agent() {
    for dynamic in [false, true] {
        let w = World::new(dynamic);
        let added = w.add().unwrap();
        assert_eq!(
            added.mode,
            if dynamic {
                AsgMode::Dynamic
            } else {
                AsgMode::Static
            }
        );
        assert_eq!(
            in_order(w.journal()),
            [
                until_store_add(),
                vec!["restore V4".into(), POLL.into(), sync_call()],
            ]
            .concat(),
            "dynamic={dynamic}"
        );
        let r = w.restores();
        assert_eq!(r.len(), 1, "one restore, dynamic={dynamic}");
        let netout = netout_lines(&r[0].1);
        if dynamic {
            assert_eq!(netout, [REJECT]);
        } else {
            assert_eq!(netout.len(), 4, "{netout:?}");
            assert!(netout[2].ends_with("--dport 443 -j ACCEPT"));
        }
        assert_eq!(w.stored(), [HANDLE]);
        assert_eq!(
            added.result.dns.nameservers,
            ["169.254.0.53", "8.8.8.8"],
            "the configured DNS servers replace the delegate's"
        );
        assert_eq!(
            added.result.first_ipv4().unwrap().to_string(),
            "10.255.30.4"
        );
    }
}

#[test]
fn an_agent_answering_200_to_the_probe_is_dynamic() {
    let mut w = World::new(true);
    w.agent.probe = Some(200);
    assert_eq!(w.add().unwrap().mode, AsgMode::Dynamic);
    assert_eq!(w.restores().len(), 1);
}

#[test]
fn ipv6_add_is_one_restore_per_family() {
    for dynamic in [false, true] {
        let mut w = World::new(dynamic);
        w.delegate.add = Ok(result(&["10.255.30.4/32", "2001:db8:ab::4/128"]));
        w.add_with(&request(HANDLE, false, true)).unwrap();
        let families: Vec<Family> = w.restores().into_iter().map(|(f, _)| f).collect();
        assert_eq!(families, [Family::V4, Family::V6]);
    }
}

#[test]
fn a_repeated_add_of_the_same_handle_is_no_clash() {
    let w = World::new(false);
    w.add().unwrap();
    w.journal();
    w.add().unwrap();
    assert!(w.journal().contains(&"restore V4".to_string()));
}

// === ADD, refused before anything changes ===

/// Nothing but reads happened: no delegate, no store write, no restore.
fn assert_untouched(w: &World, journal: &[String]) {
    for j in journal {
        assert!(
            j == "store read" || j.starts_with("GET /force-asgs-for-container"),
            "{j} after a refused ADD: {journal:?}"
        );
    }
    assert!(w.restores().is_empty());
}

#[test]
fn agent_down_or_failing_fails_the_add_and_undoes_the_delegate() {
    for (probe, msg) in [
        (
            None,
            "connect 127.0.0.1:8722: Connection refused (os error 111)",
        ),
        (
            Some(500),
            "asg sync returned 500 with message: failed with 500",
        ),
        (
            Some(404),
            "asg sync returned 404 with message: failed with 404",
        ),
    ] {
        let (w, f) = failed_add(true, |w| w.agent.probe = probe);
        assert_eq!(f.error.msg, msg);
        assert!(f.rolled_back);
        assert_eq!(
            in_order(w.journal()),
            [
                "store read".to_string(),
                PROBE.into(),
                "delegate add".into(),
                "delegate del".into()
            ]
        );
        assert!(w.restores().is_empty());
        assert!(w.stored().is_empty());
    }
}

#[test]
fn an_unreadable_store_fails_the_add_before_the_delegate() {
    let (w, f) = failed_add(false, |w| w.store.corrupt = true);
    assert!(
        f.error.msg.starts_with("store add: decoding file: "),
        "{}",
        f.error.msg
    );
    assert_untouched(&w, &w.journal());
}

#[test]
fn a_clashing_live_container_refuses_the_add_and_keeps_its_chains() {
    for dynamic in [false, true] {
        let w = World::new(dynamic);
        let twin = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a0000ffff";
        let theirs = crate::ports::store_entry(twin, "10.255.30.2", None, Value::Null);
        w.store
            .entries
            .lock()
            .unwrap()
            .insert(twin.into(), theirs.clone());
        w.ipt.set(
            Family::V4,
            "*filter\n:netout--7b8c9d0e-1f2a-4b3c-8 - [0:0]\nCOMMIT\n",
        );
        let f = w.add().unwrap_err();
        assert_eq!(f.error.code, ErrorCode::Internal);
        assert!(f.error.msg.starts_with(&format!(
            "chain name clash: container {HANDLE} maps to chain "
        )));
        assert!(f.error.msg.contains(NETOUT), "{}", f.error.msg);
        assert!(
            f.error.msg.ends_with(&format!("of live container {twin}")),
            "{}",
            f.error.msg
        );
        assert!(!f.error.details.is_empty());
        assert!(!f.rolled_back);
        assert_eq!(w.journal(), ["store read"], "nothing but the store read");
        assert!(w.restores().is_empty());
        assert_eq!(w.store.entries.lock().unwrap()[twin], theirs);
    }
}

#[test]
fn a_clash_that_appears_after_the_read_is_refused_by_the_store_and_rolled_back() {
    // Another ADD of a clashing handle wrote its entry between our read and our write: the
    // store refuses under its lock, so no restore runs; the delegate's ADD is undone.
    let mut w = World::new(false);
    let twin = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a0000ffff";
    w.store.appears_on_add = Some(crate::ports::store_entry(
        twin,
        "10.255.30.2",
        None,
        Value::Null,
    ));
    let f = w.add().unwrap_err();
    assert!(
        f.error.msg.starts_with("chain name clash: "),
        "{}",
        f.error.msg
    );
    assert!(f.error.msg.contains(twin));
    assert!(f.rolled_back);
    assert_eq!(
        in_order(w.journal()),
        [until_store_add(), vec!["delegate del".into()]].concat()
    );
    assert!(w.restores().is_empty());
    assert_eq!(w.stored(), [twin]);
}

// === ADD, failures after the delegate ===

#[test]
fn a_delegate_failure_is_reported_and_nothing_else_runs() {
    let mut w = World::new(false);
    w.delegate.add = Err(CniError::new(
        ErrorCode::Plugin(100),
        "discover network info",
        "connection refused",
    ));
    let f = w.add().unwrap_err();
    assert_eq!(
        f.error.msg,
        "delegate call: discover network info; connection refused"
    );
    assert!(!f.rolled_back);
    assert_eq!(
        in_order(w.journal()),
        [
            "store read".to_string(),
            PROBE.into(),
            "delegate add".into()
        ]
    );
}

#[test]
fn a_delegate_result_without_ipv4_undoes_the_delegate() {
    let (w, f) = failed_add(false, |w| {
        w.delegate.add = Ok(result(&["2001:db8:ab::4/128"]))
    });
    assert_eq!(f.error.msg, "delegate call: result has no IPv4 address");
    assert!(f.rolled_back);
    assert_eq!(w.journal().last().unwrap(), "delegate del");
    assert!(w.restores().is_empty());
}

#[test]
fn a_store_write_failure_undoes_the_delegate_without_touching_iptables() {
    let (w, f) = failed_add(true, |w| w.store.fail_write = true);
    assert_eq!(f.error.msg, "store add: writing file: disk full");
    assert!(f.rolled_back);
    assert_eq!(
        w.journal()[3..],
        [store_add(), "delegate del".into()],
        "no restore, no store delete"
    );
    assert!(w.restores().is_empty());
}

#[test]
fn a_failed_restore_rolls_back_rules_store_and_delegate() {
    for dynamic in [false, true] {
        let mut w = World::new(dynamic);
        w.ipt.fail_restore = true;
        let f = w.add().unwrap_err();
        assert_eq!(f.error.msg, "bulk insert: iptables-restore: line 3 failed");
        assert!(f.rolled_back);
        assert_eq!(
            w.journal()[3..],
            [
                store_add(),
                "restore V4".into(),
                // The rules are read back (nothing there: no second restore).
                "save V4".into(),
                store_delete(),
                "delegate del".into(),
            ]
        );
        assert!(w.stored().is_empty());
    }
}

#[test]
fn agent_failures_after_the_restore_roll_everything_back() {
    // (poll, sync, message) on a static cell; then the mode switching under the ADD.
    let table: [(bool, Option<u16>, Option<u16>, &str); 5] = [
        (false, Some(503), Some(405), "vpa response code: 503 with message: failed with 503"),
        (false, None, Some(405), "connect 127.0.0.1:8722: Connection refused (os error 111)"),
        (true, Some(200), Some(500), "asg sync returned 500 with message: failed with 500"),
        (
            false,
            Some(200),
            Some(200),
            "asg sync returned 200 with message: : vxlan-policy-agent changed its ASG mode during the ADD (it was static)",
        ),
        (
            true,
            Some(200),
            Some(405),
            "asg sync returned 405 with message: ASG syncing has been disabled administratively: vxlan-policy-agent changed its ASG mode during the ADD (it was dynamic)",
        ),
    ];
    for (dynamic, poll, sync, msg) in table {
        let mut w = World::new(dynamic);
        w.agent.poll = poll;
        w.agent.sync = sync;
        let f = w.add().unwrap_err();
        assert_eq!(f.error.msg, msg);
        assert!(f.rolled_back);
        assert!(f.rollback_problems.is_empty(), "{:?}", f.rollback_problems);
        let j = w.journal();
        let tail: Vec<&str> = j.iter().rev().take(4).rev().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "save V4",
                "restore V4",
                store_delete().as_str(),
                "delegate del"
            ],
            "{msg}"
        );
        let r = w.restores();
        assert_eq!(r.len(), 2, "the ADD's restore and the rollback's");
        // The rollback removes what the ADD wrote, MASQUERADE included.
        let undo = &r[1].1;
        assert!(undo.contains(&format!("-X {NETOUT}\n")), "{undo}");
        assert!(undo.contains("-D POSTROUTING -s 10.255.30.4/32 "), "{undo}");
        assert!(w.ipt.text(Family::V4).is_empty());
        assert!(w.stored().is_empty());
    }
}

#[test]
fn rollback_failures_are_reported_with_the_original_error() {
    let (_, f) = failed_add(false, |w| {
        w.agent.poll = Some(500);
        w.delegate.fail_del = true;
    });
    assert!(f.error.msg.starts_with("vpa response code: 500"));
    assert_eq!(
        f.rollback_problems,
        ["delegate delete: remove veth: device busy"]
    );
}

// === DEL ===

#[test]
fn del_after_add_is_one_restore_of_what_the_add_wrote_without_reading() {
    for dynamic in [false, true] {
        let w = World::new(dynamic);
        w.add().unwrap();
        w.journal();
        w.restores();
        let j = w.del_ok(None);
        assert_eq!(j, [store_delete(), "restore V4".into(), cleanup_call()]);
        let r = w.restores();
        assert_eq!(r.len(), 1);
        let text = &r[0].1;
        assert!(text.contains("-D POSTROUTING -s 10.255.30.4/32 "), "{text}");
        assert!(
            text.contains("-D INPUT -s 10.255.30.4/32 -j input--"),
            "{text}"
        );
        assert!(w.stored().is_empty());
    }
}

#[test]
fn del_reads_the_tables_when_they_differ_from_what_the_add_wrote() {
    // The agent's chain still goes to the container's log chain (ASG logging): the expected
    // payload's commit fails, changing nothing; the removal planned from the tables flushes
    // that chain and leaves it to the agent's orphan cleanup.
    let w = World::new(true);
    w.add().unwrap();
    let t = w.ipt.text(Family::V4).replace(
        "*filter\n",
        "*filter\n:asg-7b8c9d0e1f2a4b3c8d4e - [0:0]\n-A asg-7b8c9d0e1f2a4b3c8d4e -p tcp -g netout--7b8c9d0e-1f2a-4--log\n",
    );
    w.ipt.set(Family::V4, &t);
    w.journal();
    w.restores();
    let j = w.del_ok(None);
    assert_eq!(
        j,
        [
            store_delete(),
            "restore V4".into(),
            "save V4".into(),
            "restore V4".into(),
            cleanup_call()
        ]
    );
    let r = w.restores();
    let planned = &r[1].1;
    assert!(planned.contains(":netout--7b8c9d0e-1f2a-4--log - [0:0]\n"));
    assert!(
        !planned.contains("-X netout--7b8c9d0e-1f2a-4--log"),
        "{planned}"
    );
    assert!(planned.contains(&format!("-X {NETOUT}\n")), "{planned}");
    assert!(
        planned.contains("-D POSTROUTING -s 10.255.30.4/32 "),
        "{planned}"
    );
}

#[test]
fn del_twice_and_del_of_an_unknown_container_write_nothing() {
    let w = World::new(false);
    w.add().unwrap();
    w.del(None).1.unwrap();
    w.journal();
    w.restores();
    // No store entry, no cached result: nothing to rebuild, the tables show nothing.
    for _ in 0..2 {
        let j = w.del_ok(None);
        assert_eq!(j, [store_delete(), "save V4".into(), cleanup_call()]);
        assert!(w.restores().is_empty(), "nothing to remove, no restore");
    }
    // With the cached result (garden passes it): the rebuilt payload fails on the empty
    // tables and changes nothing, the tables show nothing more to do.
    let j = w.del_ok(Some(&result(&["10.255.30.4/32"])));
    assert_eq!(
        j,
        [
            store_delete(),
            "restore V4".into(),
            "save V4".into(),
            cleanup_call()
        ]
    );
}

#[test]
fn del_without_store_entry_finds_the_address_in_the_cached_result_or_the_tables() {
    let w = World::new(false);
    w.add().unwrap();
    w.store.entries.lock().unwrap().clear();
    w.restores();
    // prevResult names the address: what the ADD wrote is rebuilt.
    let (done, r) = w.del(Some(&result(&["10.255.30.4/32"])));
    r.unwrap();
    assert!(done.problems.is_empty());
    let r = w.restores();
    assert_eq!(r.len(), 1);
    assert!(r[0].1.contains("-D POSTROUTING -s 10.255.30.4/32 "));
    // Without it, the INPUT jump in the tables does.
    w.add().unwrap();
    w.store.entries.lock().unwrap().clear();
    w.restores();
    w.journal();
    w.del(None).1.unwrap();
    let r = w.restores();
    assert_eq!(r.len(), 1);
    assert!(r[0].1.contains("-D POSTROUTING -s 10.255.30.4/32 "));
    assert!(w.journal().contains(&"save V4".to_string()));
}

#[test]
fn del_without_host_facts_reads_the_tables() {
    let mut w = World::new(false);
    w.facts = None;
    w.add().unwrap();
    w.journal();
    w.del(None).1.unwrap();
    let j = w.journal_beside_delegate();
    assert_eq!(
        j,
        [
            store_delete(),
            "save V4".into(),
            "restore V4".into(),
            cleanup_call()
        ]
    );
}

#[test]
fn del_goes_on_past_store_delegate_and_iptables_failures() {
    let mut w = World::new(false);
    w.add().unwrap();
    w.store.corrupt = true;
    w.delegate.fail_del = true;
    w.ipt.fail_restore = true;
    let (done, r) = w.del(Some(&result(&["10.255.30.4/32"])));
    r.unwrap();
    let mut p = done.problems.clone();
    p.sort();
    assert_eq!(
        p,
        [
            "delegate delete: remove veth: device busy",
            "net out cleanup: iptables-restore: line 3 failed",
            "store delete: decoding file: expected value at line 1 column 1",
        ]
    );
    assert!(
        w.journal().ends_with(&[cleanup_call()]),
        "the cleanup still runs"
    );
}

#[test]
fn del_fails_only_when_the_agent_cleanup_does() {
    for (status, ok) in [
        (Some(200), true),
        (Some(405), true),
        (Some(500), false),
        (None, false),
    ] {
        let mut w = World::new(true);
        w.agent.cleanup = status;
        w.add().unwrap();
        w.restores();
        let (_, r) = w.del(None);
        assert_eq!(r.is_ok(), ok, "{status:?}");
        if status == Some(500) {
            assert_eq!(
                r.unwrap_err().msg,
                "asg cleanup returned 500 with message: failed with 500"
            );
        }
        // The rules and the delegate went first either way.
        assert_eq!(w.restores().len(), 1);
        assert!(w.journal().contains(&"delegate del".to_string()));
    }
}

#[test]
fn ipv6_del_is_one_restore_per_family() {
    let mut w = World::new(false);
    w.delegate.add = Ok(result(&["10.255.30.4/32", "2001:db8:ab::4/128"]));
    w.add_with(&request(HANDLE, false, true)).unwrap();
    w.journal();
    w.restores();
    w.del(None).1.unwrap();
    let families: Vec<Family> = w.restores().into_iter().map(|(f, _)| f).collect();
    assert_eq!(families, [Family::V4, Family::V6]);
    assert!(!w.journal().iter().any(|s| s.starts_with("save ")));
}
