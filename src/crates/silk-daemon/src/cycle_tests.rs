//! The converge loop's decisions, cycle by cycle, against a recording VTEP backend: when it
//! dumps the kernel, when it skips, when it applies, and what a failure, a change
//! notification, the full check interval, an untrusted list and a missing VTEP do.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use silk_core::{NetworkSpec, OverlayNetworks};
use silk_dataplane::vtep::{RecordingVtep, VtepCall, VtepState};

use super::*;

const OVERLAY: &str = "10.255.0.0/16";
/// Our cell: lease 10.255.7.0/24.
const LOCAL: u8 = 7;

fn lease(cell: u8) -> Lease {
    Lease::new(
        format!("10.0.16.{cell}").parse().unwrap(),
        format!("10.255.{cell}.0/24").parse().unwrap(),
    )
}

fn local() -> LocalVtep {
    LocalVtep {
        overlay_ip: "10.255.7.0".parse().unwrap(),
        subnet: "10.255.7.0/24".parse().unwrap(),
        networks: OverlayNetworks::parse(&NetworkSpec::One(OVERLAY.into())).unwrap(),
        single_ip_only: false,
    }
}

/// What the backend was asked beyond finding the link and draining notifications.
fn summary(calls: &[VtepCall]) -> String {
    calls
        .iter()
        .filter_map(|c| match c {
            VtepCall::LinkIndex | VtepCall::KernelChanged => None,
            VtepCall::Read => Some("read".to_string()),
            VtepCall::Apply(p) => Some(format!("apply {}", p.len())),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

type Setup = fn(&mut RecordingVtep);

struct Step {
    name: &'static str,
    /// Seconds after the first cycle.
    at: u64,
    cells: &'static [u8],
    /// What happens to the kernel (or the backend) before the cycle.
    before: Setup,
    /// The backend calls ([`summary`]).
    calls: &'static str,
    /// Operations applied, or the error text.
    want: Result<usize, &'static str>,
}

fn nothing(_: &mut RecordingVtep) {}

/// The kernel notifies about our own writes.
fn notified(b: &mut RecordingVtep) {
    b.changed = true;
}

fn arp_deleted_by_someone(b: &mut RecordingVtep) {
    b.state.lock().unwrap().arp.clear();
    b.changed = true;
}

fn apply_fails(b: &mut RecordingVtep) {
    *b.fail_apply.lock().unwrap() = true;
}

fn vtep_recreated(b: &mut RecordingVtep) {
    b.index = Some(8);
    *b.state.lock().unwrap() = VtepState::default();
    b.changed = true;
}

fn vtep_gone(b: &mut RecordingVtep) {
    b.index = None;
}

#[tokio::test]
async fn converge_decisions_cycle_by_cycle() {
    let steps = [
        Step {
            name: "first cycle dumps and adds cell 8 (route, ARP, FDB)",
            at: 0,
            cells: &[LOCAL, 8],
            before: nothing,
            calls: "read, apply 3",
            want: Ok(3),
        },
        Step {
            name: "our writes notified: a verifying dump finds it converged",
            at: 1,
            cells: &[LOCAL, 8],
            before: notified,
            calls: "read",
            want: Ok(0),
        },
        Step {
            name: "steady: the dump is skipped",
            at: 2,
            cells: &[LOCAL, 8],
            before: nothing,
            calls: "",
            want: Ok(0),
        },
        Step {
            name: "still steady within the full check interval",
            at: 60,
            cells: &[LOCAL, 8],
            before: nothing,
            calls: "",
            want: Ok(0),
        },
        Step {
            name: "full check interval passed since the verifying dump",
            at: 61,
            cells: &[LOCAL, 8],
            before: nothing,
            calls: "read",
            want: Ok(0),
        },
        Step {
            name: "steady again after the full check",
            at: 62,
            cells: &[LOCAL, 8],
            before: nothing,
            calls: "",
            want: Ok(0),
        },
        Step {
            name: "a change notification: someone deleted the ARP entry, re-added",
            at: 63,
            cells: &[LOCAL, 8],
            before: arp_deleted_by_someone,
            calls: "read, apply 1",
            want: Ok(1),
        },
        Step {
            name: "verifying dump after the repair",
            at: 64,
            cells: &[LOCAL, 8],
            before: notified,
            calls: "read",
            want: Ok(0),
        },
        Step {
            name: "a new lease in the list: dump and add cell 9",
            at: 65,
            cells: &[LOCAL, 8, 9],
            before: nothing,
            calls: "read, apply 3",
            want: Ok(3),
        },
        Step {
            name: "apply fails: the error is returned",
            at: 66,
            cells: &[LOCAL, 8, 9, 10],
            before: apply_fails,
            calls: "read, apply 3",
            want: Err("converge leases: apply vtep plan: netlink request failed: injected failure"),
        },
        Step {
            name: "after a failure, no notification: dump and re-apply",
            at: 67,
            cells: &[LOCAL, 8, 9, 10],
            before: nothing,
            calls: "read, apply 3",
            want: Ok(3),
        },
        Step {
            name: "verifying dump after the retry",
            at: 68,
            cells: &[LOCAL, 8, 9, 10],
            before: notified,
            calls: "read",
            want: Ok(0),
        },
        Step {
            name: "a list without our lease is not trusted: dump, remove nothing",
            at: 69,
            cells: &[9],
            before: nothing,
            calls: "read",
            want: Ok(0),
        },
        Step {
            name: "the same untrusted list again: skipped",
            at: 70,
            cells: &[9],
            before: nothing,
            calls: "",
            want: Ok(0),
        },
        Step {
            name: "cell 8 missing from a trusted list once: held back",
            at: 71,
            cells: &[LOCAL, 9, 10],
            before: nothing,
            calls: "read",
            want: Ok(0),
        },
        Step {
            name: "missing from a second trusted list: cell 8's entries removed",
            at: 72,
            cells: &[LOCAL, 9, 10],
            before: nothing,
            calls: "read, apply 3",
            want: Ok(3),
        },
        Step {
            name: "verifying dump after the removal",
            at: 73,
            cells: &[LOCAL, 9, 10],
            before: notified,
            calls: "read",
            want: Ok(0),
        },
        Step {
            name: "VTEP recreated under another index: dump and refill",
            at: 74,
            cells: &[LOCAL, 9, 10],
            before: vtep_recreated,
            calls: "read, apply 6",
            want: Ok(6),
        },
        Step {
            name: "no VTEP: an error, nothing read",
            at: 75,
            cells: &[LOCAL, 9, 10],
            before: vtep_gone,
            calls: "",
            want: Err("vtep silk-vtep not found"),
        },
    ];
    let mut c = Converger::new(
        RecordingVtep::new(4, VtepState::default()),
        "silk-vtep".into(),
        local(),
    );
    let start = Instant::now();
    for step in steps {
        (step.before)(c.backend());
        let leases: Vec<Lease> = step.cells.iter().map(|&n| lease(n)).collect();
        let got = c
            .converge_at(&leases, start + Duration::from_secs(step.at))
            .await
            .map(|(applied, _)| applied)
            .map_err(|e| e.to_string());
        let calls = summary(&c.backend().take_calls());
        assert_eq!(
            (calls.as_str(), got),
            (step.calls, step.want.map_err(str::to_string)),
            "{}",
            step.name
        );
    }
    // Cells 9 and 10 remain, with a route, ARP and FDB entry each; cell 8 is gone.
    let state = c.backend().state();
    let gateways: Vec<String> = state.arp.iter().map(|a| a.ip.to_string()).collect();
    assert_eq!(gateways, ["10.255.9.0", "10.255.10.0"]);
    assert_eq!((state.routes.len(), state.fdb.len()), (2, 2));
}

#[tokio::test]
async fn trust_follows_our_own_lease_in_the_list() {
    let mut c = Converger::new(
        RecordingVtep::new(4, VtepState::default()),
        "silk-vtep".into(),
        local(),
    );
    let now = Instant::now();
    assert_eq!(
        c.converge_at(&[lease(LOCAL)], now).await.unwrap(),
        (0, true)
    );
    assert_eq!(c.converge_at(&[lease(8)], now).await.unwrap(), (3, false));
    assert_eq!(c.converge_at(&[], now).await.unwrap(), (0, false));
}
