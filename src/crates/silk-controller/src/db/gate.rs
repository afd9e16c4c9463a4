//! How many statements may hold a pooled connection at once, and how the pool grows.
//!
//! A bare pool opens a new connection for every request that finds none idle, and that request
//! waits for the whole dial, TLS handshake and login (tens of milliseconds, more on a busy
//! database host), although a connection in use would have been free again within a
//! millisecond. Under a burst (many cells starting at once) every request of the burst paid
//! that. The gate instead lets requests wait, first come first served, for one of `allowed`
//! checkouts, and when one has to wait it grows the pool in the background, at most
//! [`MAX_GROWING`] new connections at a time, each added to `allowed` once it is open, up to
//! `max_open_connections`. So requests are served by the connections that exist while new
//! ones are opened beside them, and the pool still reaches the size the load needs.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::StoreError;

/// Connections opened in the background at the same time.
pub const MAX_GROWING: usize = 2;

/// What [`Gate::admit`] decided for one checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A checkout slot was free.
    Now,
    /// All slots are taken: wait for one; `grow` says whether to open one more connection
    /// in the background.
    Wait { grow: bool },
}

/// Checkout slots in front of a connection pool of at most `max` connections.
pub struct Gate {
    slots: Arc<Semaphore>,
    allowed: AtomicUsize,
    growing: AtomicUsize,
    max: usize,
}

/// A checkout slot, held with the connection and given back with it.
pub type Slot = OwnedSemaphorePermit;

impl Gate {
    /// `initial` slots (the connections opened at start), growing up to `max`.
    pub fn new(initial: usize, max: usize) -> Gate {
        let max = max.max(1);
        let initial = initial.clamp(1, max);
        Gate {
            slots: Arc::new(Semaphore::new(initial)),
            allowed: AtomicUsize::new(initial),
            growing: AtomicUsize::new(0),
            max,
        }
    }

    /// Slots there are now (connections the pool is known to hold or to be allowed).
    pub fn allowed(&self) -> usize {
        self.allowed.load(Ordering::Acquire)
    }

    /// Takes a free slot, or decides to wait (and whether to grow meanwhile).
    fn admit(&self) -> (Option<Slot>, Admission) {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return (Some(slot), Admission::Now);
        }
        let room = self.allowed() + self.growing.load(Ordering::Acquire) < self.max;
        let grow = room
            && self
                .growing
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
                    (g < MAX_GROWING).then_some(g + 1)
                })
                .is_ok();
        (None, Admission::Wait { grow })
    }

    /// A checkout slot within `wait`; when none is free, `open` (which opens one more pooled
    /// connection and returns it to the pool) is spawned, and a slot is added once it succeeds.
    pub async fn enter<F, Fut>(
        self: &Arc<Self>,
        wait: Duration,
        spawn: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
        open: F,
    ) -> Result<Slot, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let (slot, admission) = self.admit();
        if let Some(slot) = slot {
            return Ok(slot);
        }
        if admission == (Admission::Wait { grow: true }) {
            let gate = self.clone();
            let opened = open();
            spawn(Box::pin(async move {
                if opened.await {
                    gate.allowed.fetch_add(1, Ordering::AcqRel);
                    gate.slots.add_permits(1);
                }
                gate.growing.fetch_sub(1, Ordering::AcqRel);
            }));
        }
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            // The semaphore is never closed.
            Ok(Err(_)) => Err(StoreError::Connection("connection pool closed".into())),
            Err(_) => Err(StoreError::Timeout(wait.as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn admission_table() {
        // (initial, max, slots taken, growing, want)
        let cases = [
            (2, 8, 0, 0, Admission::Now),
            (2, 8, 1, 0, Admission::Now),
            (2, 8, 2, 0, Admission::Wait { grow: true }),
            (2, 8, 2, 1, Admission::Wait { grow: true }),
            (2, 8, 2, MAX_GROWING, Admission::Wait { grow: false }),
            (2, 2, 2, 0, Admission::Wait { grow: false }),
            (2, 3, 2, 1, Admission::Wait { grow: false }),
            (0, 0, 1, 0, Admission::Wait { grow: false }),
            (10, 4, 4, 0, Admission::Wait { grow: false }),
        ];
        for (initial, max, taken, growing, want) in cases {
            let gate = Gate::new(initial, max);
            let _held: Vec<_> = (0..taken)
                .map(|_| gate.slots.clone().try_acquire_owned().unwrap())
                .collect();
            gate.growing.store(growing, Ordering::Release);
            let (slot, got) = gate.admit();
            assert_eq!(
                got, want,
                "initial {initial} max {max} taken {taken} growing {growing}"
            );
            assert_eq!(slot.is_some(), got == Admission::Now);
        }
    }

    async fn until(what: impl Fn() -> bool) {
        for _ in 0..500 {
            if what() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("condition not reached");
    }

    /// A gate of one slot (growing to 4) whose slot is taken.
    async fn one_slot_taken() -> (Arc<Gate>, Slot) {
        let gate = Arc::new(Gate::new(1, 4));
        let held = gate
            .enter(
                Duration::from_secs(1),
                |_| unreachable!("a free slot needs no growth"),
                || async { true },
            )
            .await
            .unwrap();
        (gate, held)
    }

    #[test]
    fn a_waiter_is_served_by_a_returned_slot_while_the_pool_grows() {
        rt().block_on(async {
            let (gate, held) = one_slot_taken().await;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let waiter = gate.enter(
                Duration::from_secs(5),
                |f| {
                    tokio::spawn(f);
                },
                // The new connection takes until the test says so.
                || async move { rx.await.is_ok() },
            );
            let release = async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(held);
            };
            let (slot, ()) = tokio::join!(waiter, release);
            let slot = slot.unwrap();
            // Served by the returned slot; the growth is still pending.
            assert_eq!(gate.allowed(), 1);
            assert_eq!(gate.growing.load(Ordering::Acquire), 1);
            tx.send(()).unwrap();
            until(|| gate.allowed() == 2).await;
            until(|| gate.growing.load(Ordering::Acquire) == 0).await;
            drop(slot);
            assert_eq!(gate.slots.available_permits(), 2);
        });
    }

    #[test]
    fn a_failed_growth_adds_no_slot_and_the_wait_is_bounded() {
        rt().block_on(async {
            let (gate, _held) = one_slot_taken().await;
            let got = gate
                .enter(
                    Duration::from_millis(50),
                    |f| {
                        tokio::spawn(f);
                    },
                    || async { false },
                )
                .await;
            assert!(matches!(got, Err(StoreError::Timeout(_))), "{got:?}");
            until(|| gate.growing.load(Ordering::Acquire) == 0).await;
            assert_eq!(gate.allowed(), 1);
        });
    }
}
