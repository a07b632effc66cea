//! End-to-end tests of the real `avsnode` binary, one module per concern, linked as one test
//! binary. `common` is the fixture that starts nodes; each module's doc says what it covers.
//!
//! Run one concern with a filter on its module, e.g.
//! `cargo test -p avsnode-tests --test node tls::`.

mod common;

mod bench;
mod chain;
mod crash;
mod deploy;
mod docker;
mod e2e;
mod hostile;
mod import;
mod interop;
mod limits;
mod management;
mod monitoring_live;
mod monitoring_rules;
mod rejections;
mod reload;
mod remote_signer;
mod replicas;
mod restart;
mod signing_hsm;
mod signing_remote;
mod soak;
mod systemd;
mod tls;
