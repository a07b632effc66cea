//! End-to-end tests of avsnode and the fixtures they share.
//!
//! The test files in `tests/tests/` run the real `avsnode` binary and the example performer over
//! real sockets on ephemeral ports. This library holds fixtures only (finding the binaries, the
//! [`docker`] images of the example performer, ...), so any crate's tests can use it: it must never
//! depend on `avsnode` or `avsnode-performer`.

pub mod chain;
pub mod docker;
pub mod pki;
pub mod postgres;
pub mod softhsm;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

/// The path of a workspace binary (`avsnode`, `avsnode-example-performer`), never stale.
///
/// `cargo test --workspace` builds both before any test runs: the packages that own them have
/// integration tests of their own (`node/tests/cli.rs`, `performer/example/tests/binary.rs`), and
/// cargo builds a package's binaries for those. A run that selected other packages only (`cargo
/// test -p avsnode-tests`) may find one missing or older than the workspace's sources: then it is
/// built here, once per test process, in the profile of the running test, and the run says so.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let path = profile_dir().join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashSet::new);
    if !built.contains(name) && stale(&path) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "building {name}: it is missing or older than the sources (`cargo test \
                 --workspace` builds it before the run)"
            );
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "--quiet", "--bin", name]);
        if profile_dir().file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("running cargo build --bin {name}: {e}"));
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    built.insert(name.to_owned());
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Whether `binary` is missing or older than a source it could be built from: a `.rs`, `.proto`
/// or `Cargo.toml` of the workspace outside `tests/`, or `Cargo.lock`.
fn stale(binary: &Path) -> bool {
    fn newest(dir: &Path, found: &mut SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if !matches!(name.to_str(), Some("target" | "tests" | "fuzz" | ".git")) {
                    newest(&path, found);
                }
            } else if (path.extension().is_some_and(|e| e == "rs" || e == "proto")
                || name == "Cargo.toml"
                || name == "Cargo.lock")
                && let Ok(modified) = entry.metadata().and_then(|m| m.modified())
            {
                *found = (*found).max(modified);
            }
        }
    }
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return true;
    };
    let mut sources = SystemTime::UNIX_EPOCH;
    newest(workspace_root(), &mut sources);
    sources > built
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
