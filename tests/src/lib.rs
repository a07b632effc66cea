//! End-to-end tests of avsnode and the fixtures they share.
//!
//! The test files in `tests/tests/` run the real `avsnode` binary and the example performer over
//! real sockets on ephemeral ports. This library holds fixtures only (finding the binaries, the
//! [`docker`] images of the example performer, ...), so any crate's tests can use it: it must never
//! depend on `avsnode` or `avsnode-performer`.

pub mod docker;
pub mod pki;
pub mod softhsm;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The path of a workspace binary, built first (once per test process) so it is never stale.
///
/// Binaries of other packages are not built by `cargo test` for this one, so this runs
/// `cargo build --bin NAME` in the same profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let profile_dir = profile_dir();
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashSet::new);
    if !built.contains(name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "--quiet", "--bin", name]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("running cargo build --bin {name}: {e}"));
        assert!(status.success(), "cargo build --bin {name} failed");
        built.insert(name.to_owned());
    }
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `target/<profile>`: the running test executable lives in its `deps/` folder.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("profile folder").to_path_buf()
}
