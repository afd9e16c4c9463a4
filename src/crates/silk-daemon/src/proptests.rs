//! Property tests of silk-daemon's config file, the one input it reads before asking the
//! controller (whose answers silk-client's properties cover). Every input gets a config or the
//! list of its problems, never a panic.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use proptest::prelude::*;
use silk_testkit::fuzz;

use crate::config::tests::RENDERED;
use crate::config::Config;

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_config_parses_or_lists_its_problems(text in fuzz::config_text(RENDERED)) {
        if let Err(e) = Config::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
