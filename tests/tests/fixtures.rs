//! The fixtures themselves work: a binary of another package is found and runs.

#[test]
fn builds_and_finds_another_packages_binary() {
    let path = avsnode_tests::binary("avsnode");
    let status = std::process::Command::new(&path)
        .arg("--version")
        .status()
        .unwrap();
    assert!(status.success(), "{} did not run", path.display());
}
