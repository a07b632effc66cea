//! Embeds the git commit for `avsnode_build_info{commit}`: `AVSNODE_GIT_COMMIT` if set (release
//! builds from a tarball), else `git rev-parse`, else "unknown" (e.g. a Docker build without .git).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=AVSNODE_GIT_COMMIT");
    for path in ["../.git/HEAD", "../.git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("AVSNODE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=AVSNODE_GIT_COMMIT={commit}");
}
