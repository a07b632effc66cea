//! `[chain]`: where the node reads aggregator keys and operator-set membership (docs/OPERATING.md
//! "Reading from chain"). Absent: nothing is read from chain, aggregators come from the file.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use avsnode_signer::messages::Address;
use avsnode_signing::definition::duration;
use serde::Deserialize;

use super::{Config, Parsed};

/// `[chain]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// JSON-RPC endpoints of the L1 (HTTP or HTTPS), tried in order: the next takes over while
    /// one does not answer. A URL may carry an API key: it is never logged.
    pub rpc_urls: Vec<RpcUrl>,
    /// The chain id every endpoint must serve (1 mainnet, 17000 Holesky, 11155111 Sepolia); the
    /// node refuses to start on another.
    pub chain_id: u64,
    /// EigenLayer's AllocationManager on that chain.
    pub allocation_manager: Parsed<Address>,
    /// EigenLayer's KeyRegistrar on that chain.
    pub key_registrar: Parsed<Address>,
    /// How many blocks behind head the log follower stays (default 2): events in the newest
    /// blocks are applied once that many blocks are built on them.
    #[serde(default = "follow_distance")]
    pub follow_distance: u64,
    /// How often the follower asks for new blocks (default `"4s"`).
    #[serde(default = "poll_interval", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// How long cached facts keep serving after the last successful follower round while no
    /// endpoint answers (default `"10m"`); after it, chain-checked tasks are UNAVAILABLE.
    #[serde(default = "serve_cached_for", deserialize_with = "duration")]
    pub serve_cached_for: Duration,
    /// Bound on each request to an endpoint (default `"5s"`).
    #[serde(default = "request_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Largest block range one log query asks for (default 1000; some providers allow less).
    #[serde(default = "max_log_range")]
    pub max_log_range: u64,
    /// Facts cached at most (default 100000: about 30 MB at the most, 300 bytes a fact).
    #[serde(default = "cache_facts")]
    pub cache_facts: usize,
}

fn follow_distance() -> u64 {
    2
}
fn poll_interval() -> Duration {
    Duration::from_secs(4)
}
fn serve_cached_for() -> Duration {
    Duration::from_secs(600)
}
fn request_timeout() -> Duration {
    Duration::from_secs(5)
}
fn max_log_range() -> u64 {
    1000
}
fn cache_facts() -> usize {
    100_000
}

/// An RPC endpoint URL, parsed when the file is read. Shown (`Debug`, errors, logs) as its
/// scheme and host only: the rest often is an API key.
#[derive(Clone, PartialEq)]
pub struct RpcUrl(Result<avsnode_chain::Uri, String>);

impl RpcUrl {
    /// The URL of a checked configuration.
    ///
    /// # Panics
    /// If it did not parse, which `Config::problems` reports (and `Config::from_toml` refuses).
    pub fn get(&self) -> &avsnode_chain::Uri {
        self.0
            .as_ref()
            .expect("RPC URLs are checked when the configuration is read")
    }

    /// Why it does not parse (never repeating the URL).
    pub fn error(&self) -> Option<&str> {
        self.0.as_ref().err().map(String::as_str)
    }
}

impl FromStr for RpcUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<RpcUrl, Self::Err> {
        let parsed = s
            .parse::<avsnode_chain::Uri>()
            .map_err(|e| format!("not a URL ({e}); use http://HOST:PORT/… or https://…"))
            .and_then(|uri| match (uri.scheme_str(), uri.host()) {
                (Some("http" | "https"), Some(_)) => Ok(uri),
                _ => Err("not an http:// or https:// URL with a host".into()),
            });
        Ok(RpcUrl(parsed))
    }
}

impl<'de> Deserialize<'de> for RpcUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RpcUrl, D::Error> {
        let text = String::deserialize(d)?;
        let Ok(url) = text.parse();
        Ok(url)
    }
}

impl fmt::Debug for RpcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(uri) => f.write_str(&avsnode_chain::redacted(uri)),
            Err(e) => write!(f, "(invalid: {e})"),
        }
    }
}

impl ChainConfig {
    /// What the chain reader needs, from a checked configuration.
    pub fn settings(&self) -> avsnode_chain::Settings {
        avsnode_chain::Settings {
            rpc_urls: self.rpc_urls.iter().map(|u| u.get().clone()).collect(),
            chain_id: self.chain_id,
            allocation_manager: *self.allocation_manager.get(),
            key_registrar: *self.key_registrar.get(),
            follow_distance: self.follow_distance,
            poll_interval: self.poll_interval,
            serve_cached_for: self.serve_cached_for,
            request_timeout: self.request_timeout,
            max_log_range: self.max_log_range,
            cache_capacity: self.cache_facts,
        }
    }
}

impl Config {
    /// Problems of `[chain]`.
    pub(super) fn chain_problems(&self, problem: &mut dyn FnMut(String, String)) {
        let Some(chain) = &self.chain else { return };
        let mut at = |key: &str, text: String| problem(format!("chain.{key}"), text);
        if chain.rpc_urls.is_empty() {
            at("rpc_urls", "at least one endpoint is needed".into());
        }
        for (i, url) in chain.rpc_urls.iter().enumerate() {
            if let Some(e) = url.error() {
                at(&format!("rpc_urls[{i}]"), e.to_owned());
            }
        }
        if chain.chain_id == 0 {
            at("chain_id", "must be the chain's id (1 for mainnet)".into());
        }
        for (key, address) in [
            ("allocation_manager", &chain.allocation_manager),
            ("key_registrar", &chain.key_registrar),
        ] {
            match address.ok() {
                None => at(key, address.error().unwrap_or_default().to_owned()),
                Some(a) if a.0 == [0; 20] => at(key, "must not be the zero address".into()),
                Some(_) => {}
            }
        }
        if chain.poll_interval.is_zero() {
            at("poll_interval", "must be above zero".into());
        }
        if chain.request_timeout.is_zero() {
            at("request_timeout", "must be above zero".into());
        }
        if chain.serve_cached_for <= chain.poll_interval {
            at(
                "serve_cached_for",
                "must exceed poll_interval, or one slow round stops every chain check".into(),
            );
        }
        if chain.max_log_range == 0 {
            at("max_log_range", "must be at least 1".into());
        }
        if chain.cache_facts < 16 {
            at("cache_facts", "must be at least 16".into());
        }
    }
}
