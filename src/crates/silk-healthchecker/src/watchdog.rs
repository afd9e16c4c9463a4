//! The verdict after each poll, as upstream's WatchHealthcheckEndpoint decides it: a success
//! resets the run of failures (and the counter file); the [`FAILED_POLLS`]th failure in a row
//! makes the endpoint unhealthy.

use crate::FAILED_POLLS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Answered 200: write 0 to the failure counter.
    Healthy,
    /// Failed, `n` times in a row, fewer than [`FAILED_POLLS`]: poll again.
    Failing(u32),
    /// Failed [`FAILED_POLLS`] times in a row: add one to the counter and exit 1.
    Unhealthy,
}

#[derive(Debug, Default)]
pub struct Watchdog {
    failures: u32,
}

impl Watchdog {
    pub fn observe(&mut self, ok: bool) -> Verdict {
        if ok {
            self.failures = 0;
            return Verdict::Healthy;
        }
        self.failures += 1;
        if self.failures >= FAILED_POLLS {
            Verdict::Unhealthy
        } else {
            Verdict::Failing(self.failures)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_in_a_row_and_only_in_a_row() {
        let cases: &[(&[bool], Verdict)] = &[
            (&[true], Verdict::Healthy),
            (&[false], Verdict::Failing(1)),
            (&[false, false], Verdict::Failing(2)),
            (&[false, false, false], Verdict::Unhealthy),
            (&[false, false, true, false, false], Verdict::Failing(2)),
            (&[false, true, false, false, false], Verdict::Unhealthy),
        ];
        for (polls, want) in cases {
            let mut w = Watchdog::default();
            let last = polls.iter().map(|ok| w.observe(*ok)).last().unwrap();
            assert_eq!(&last, want, "{polls:?}");
        }
    }
}
