//! `deploy/avsnode.service` and the node's side of it: the unit passes `systemd-analyze verify`
//! with the hardening it promises; the notify protocol (READY, WATCHDOG, RELOADING, STOPPING)
//! against a socket the test listens on, as systemd's would; a password handed over as a
//! credential (`LoadCredential=` and `%d`) is what unlocks the signer.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use avsnode_signer::Scheme;

use crate::common::{TestNode, signal};

/// `systemd-analyze`, or `None` (saying why) when it is missing outside CI.
fn systemd_analyze() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/systemd-analyze");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "systemd-analyze is not installed and CI must verify the unit: apt-get install systemd"
    );
    eprintln!("skipping: systemd-analyze is not installed (apt-get install systemd)");
    None
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let unit =
        std::fs::read_to_string(avsnode_tests::workspace_root().join("deploy/avsnode.service"))
            .unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=avsnode",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "AmbientCapabilities=\n",
        "LoadCredential=",
        "%d/",
    ] {
        assert!(unit.contains(line), "the unit has no {line:?}");
    }
    // verify checks that ExecStart's program exists: point it at the built one.
    let dir = tempfile::tempdir().unwrap();
    let binary = avsnode_tests::binary("avsnode");
    let copy = dir.path().join("avsnode.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/avsnode", &binary.display().to_string()),
    )
    .unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// The next datagram on `socket` (at most 10 s).
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads notifications until one contains `wanted` (at most 10 s); the ones before it.
fn until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let message = next(socket);
        if message.lines().any(|l| l == wanted) {
            return seen;
        }
        seen.push(message);
        assert!(
            Instant::now() < deadline,
            "no {wanted} within 10 s: {seen:?}"
        );
    }
}

#[test]
fn the_node_speaks_the_notify_protocol_and_reads_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The password only in the credentials directory; the file the config names does not exist.
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let fixture = crate::common::Fixture::new();
    std::fs::copy(
        fixture.dir().join("keys/ecdsa-key.pass"),
        credentials.join("ecdsa.pass"),
    )
    .unwrap();
    let mut node = TestNode::builder()
        .fixture(fixture)
        .signer_backend(
            Scheme::Ecdsa,
            "keystore = \"keys/ecdsa-key.json\"\npassword_file = \"/nonexistent/ecdsa.pass\"",
        )
        .env("NOTIFY_SOCKET", path.display().to_string())
        .env("WATCHDOG_USEC", "200000")
        .env("CREDENTIALS_DIRECTORY", credentials.display().to_string())
        .env(
            "AVSNODE_SIGNER_ECDSA_KEY_PASSWORD_FILE",
            credentials.join("ecdsa.pass").display().to_string(),
        )
        .start();
    let before = until(&socket, "READY=1");
    assert!(before.is_empty(), "nothing before READY: {before:?}");
    until(&socket, "WATCHDOG=1");
    until(&socket, "WATCHDOG=1");

    signal(node.pid().unwrap(), "-HUP");
    until(&socket, "RELOADING=1");
    until(&socket, "READY=1");

    let (status, _) = node.stop();
    assert!(status.success(), "{status:?}: {}", node.log());
    until(&socket, "STOPPING=1");
}
