//! The node's TOML configuration: `Config::from_toml` (parse, environment overrides, path
//! resolution, validation) and everything `check-config` prints about an accepted file.
//!
//! Input: the TOML text, optionally followed by a NUL byte and `NAME=VALUE` lines that act as
//! the environment (so the `AVSNODE_*` overrides are fuzzed too).
//!
//! Invariants: nothing panics; a config is accepted exactly when it has no problems, and an
//! accepted config still has none when checked again; every accepted aggregator key decodes;
//! a rejected one names at least one problem.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use avsnode::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env_text) = text.split_once('\0').unwrap_or((text, ""));
    let env: HashMap<&str, &str> = env_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let lookup = |name: &str| env.get(name).map(|v| (*v).to_owned());

    match Config::from_toml(toml, Path::new("/etc/avsnode/avsnode.toml"), lookup) {
        Ok(config) => {
            let problems = config.problems();
            assert!(
                problems.is_empty(),
                "accepted config has problems: {problems:?}"
            );
            assert!(!config.avs.is_empty());
            // Every value of an accepted configuration was parsed when it was read: reading the
            // typed values never panics (an undecodable aggregator key, an unparsed address).
            for avs in &config.avs {
                assert!(
                    avs.aggregators == avsnode::config::Aggregators::FromChain
                        || !avs.aggregators.list().is_empty()
                );
                let _ = avs.address.get();
                for agg in avs.aggregators.list() {
                    let _ = (agg.address.get(), agg.key());
                }
            }
            for signer in &config.signers {
                assert!(
                    signer.backend().is_ok(),
                    "accepted signer without a backend"
                );
                let _ = signer.backend_label();
                let _ = signer.location();
            }
            if let Some(chain) = &config.chain {
                let _ = chain.settings();
            }
            let _ = config.operator();
            let _ = config.node_id();
            let _ = config.docker_network();
            let _ = config.summary();
        }
        Err(ConfigError::Invalid { problems, .. }) => {
            assert!(!problems.is_empty(), "rejected config without a problem");
            for p in &problems {
                let _ = p.to_string();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
