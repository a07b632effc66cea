//! Docker fixtures: whether an engine is reachable, images of the example performer, and the
//! `docker` CLI for tests that inspect or kill containers.
//!
//! The images are `FROM scratch` with the example performer built as a static binary, tagged
//! `avsnode-example-performer:test-…` and labelled with a hash of what went into them: an image
//! built from the current binary is reused (across test processes and runs), a stale one rebuilt.
//! Concurrent test processes may build the same image at once; the builds are identical, so
//! whichever tags last wins and both work.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const REPOSITORY: &str = "avsnode-example-performer";
const BINARY: &str = "avsnode-example-performer";
/// The image label holding the hash of the binary and Dockerfile it was built from.
const INPUT_LABEL: &str = "io.avsnode.test.input";
/// Part of that hash: change it when the way images are built changes, to rebuild them.
const RECIPE: &[u8] = b"scratch image, binary mode 0755";

/// Whether a Docker Engine answers `docker info` (asked once per process). If not, prints
/// `skipping: no Docker Engine reachable (reason)` and returns false, so a test can
/// `if !docker_available() { return; }` — except on CI (`CI=true`), where it panics with the
/// reason: there a missing engine is a broken runner, not a reason to skip.
pub fn docker_available() -> bool {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    match PROBED.get_or_init(probe) {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("no Docker Engine reachable on CI: {reason}")
        }
        Err(reason) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipping: no Docker Engine reachable ({reason})");
            }
            false
        }
    }
}

fn probe() -> Result<(), String> {
    let mut child = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!("docker info: {status}: {}", stderr.trim()));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("docker info did not answer within 10 s".into());
            }
            Err(e) => return Err(format!("waiting for docker info: {e}")),
        }
    }
}

/// Runs `docker ARGS`, asserts that it succeeded, and returns its standard output.
pub fn docker_cli(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"));
    assert!(
        output.status.success(),
        "docker {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The tag of a `FROM scratch` image of the example performer (user 65534:65534), with
/// `AVSNODE_EXAMPLE_MARKER=marker` set when given: `avsnode-example-performer:test-MARKER`
/// (`:test-plain` without). Built (once per process, reused while up to date) on first use.
///
/// A marker must be a valid tag suffix: ASCII letters, digits, `_`, `.` and `-`.
pub fn example_image(marker: Option<&str>) -> String {
    let mut dockerfile = dockerfile();
    let tag = match marker {
        Some(marker) => {
            assert!(
                !marker.is_empty()
                    && marker.len() <= 100
                    && marker
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
                "marker {marker:?} cannot be part of an image tag"
            );
            dockerfile.push_str(&format!("ENV AVSNODE_EXAMPLE_MARKER={marker}\n"));
            format!("{REPOSITORY}:test-{marker}{}", profile_suffix())
        }
        None => format!("{REPOSITORY}:test-plain{}", profile_suffix()),
    };
    image(&tag, &dockerfile)
}

/// The tag of an image of the example performer that exits with code 1 at once, never serving:
/// `avsnode-example-performer:test-crash` (`CMD ["--exit-after", "0"]`).
pub fn crashing_image() -> String {
    let mut dockerfile = dockerfile();
    dockerfile.push_str("CMD [\"--exit-after\", \"0\"]\n");
    image(
        &format!("{REPOSITORY}:test-crash{}", profile_suffix()),
        &dockerfile,
    )
}

/// `-release` (or another profile) outside the debug profile: tests and benchmarks running at
/// once build different binaries, and must not keep replacing each other's images.
fn profile_suffix() -> String {
    let dir = crate::profile_dir();
    match dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => String::new(),
        Some(profile) => format!("-{profile}"),
    }
}

fn dockerfile() -> String {
    format!(
        "FROM scratch\nCOPY {BINARY} /performer\nUSER 65534:65534\nENTRYPOINT [\"/performer\"]\n"
    )
}

/// Builds `tag` from `dockerfile` and the static example binary, unless an image built from the
/// same inputs already has that tag.
fn image(tag: &str, dockerfile: &str) -> String {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|t| t == tag) {
        return tag.to_owned();
    }
    let binary = static_example();
    let bytes =
        std::fs::read(&binary).unwrap_or_else(|e| panic!("reading {}: {e}", binary.display()));
    let mut hash = Sha256::new();
    hash.update(RECIPE);
    hash.update(&bytes);
    hash.update(dockerfile.as_bytes());
    let input: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();

    let current = Command::new("docker")
        .args(["image", "inspect", "--format"])
        .arg(format!(
            "{{{{.Id}}}} {{{{index .Config.Labels \"{INPUT_LABEL}\"}}}}"
        ))
        .arg(tag)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    let (old_id, old_input) = current
        .as_deref()
        .and_then(|current| current.split_once(' '))
        .unzip();
    if old_input != Some(input.as_str()) {
        let context = std::env::temp_dir().join(format!(
            "avsnode-image-{}-{}",
            std::process::id(),
            tag.replace([':', '/'], "-")
        ));
        let _ = std::fs::remove_dir_all(&context);
        std::fs::create_dir_all(&context).expect("creating the docker build context");
        let copy = context.join(BINARY);
        std::fs::write(&copy, &bytes).expect("copying the binary into the context");
        // Executable by the image's user (65534), whoever builds it.
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .expect("making the binary executable");
        std::fs::write(context.join("Dockerfile"), dockerfile).expect("writing the Dockerfile");
        // The legacy builder (buildx is not everywhere); its deprecation notice goes to the
        // captured stderr, shown only if the build fails.
        let output = Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--quiet", "--label"])
            .arg(format!("{INPUT_LABEL}={input}"))
            .args(["--tag", tag])
            .arg(&context)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running docker build: {e}"));
        let _ = std::fs::remove_dir_all(&context);
        assert!(
            output.status.success(),
            "docker build of {tag} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        // The image the tag left behind would only pile up; one still in use stays.
        if let Some(old_id) = old_id {
            let _ = Command::new("docker")
                .args(["image", "rm", old_id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    built.push(tag.to_owned());
    tag.to_owned()
}

/// The node's image, built by `deploy/build-image.sh` from the test profile's `avsnode` binary
/// (once per process): `avsnode:test` (`avsnode:test-release` from the release profile).
pub fn node_image() -> String {
    node_image_with(None)
}

/// [`node_image`] with a PKCS#11 module and the libraries it links (`--pkcs11-module`):
/// `avsnode:test-pkcs11`.
pub fn node_image_with_pkcs11(module: &str) -> String {
    node_image_with(Some(module))
}

fn node_image_with(module: Option<&str>) -> String {
    static BUILT: Mutex<Vec<(Option<String>, String)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, tag)) = built.iter().find(|(m, _)| m.as_deref() == module) {
        return tag.clone();
    }
    let tag = match module {
        None => format!("avsnode:test{}", profile_suffix()),
        Some(_) => format!("avsnode:test-pkcs11{}", profile_suffix()),
    };
    let binary = crate::binary("avsnode").display().to_string();
    let mut args = vec!["--binary", &binary, "--tag", &tag];
    if let Some(module) = module {
        args.extend(["--pkcs11-module", module]);
    }
    build_with_script(&args);
    built.push((module.map(str::to_owned), tag.clone()));
    tag
}

/// Prometheus's image for the compose stack, built by `deploy/build-image.sh prometheus` from
/// this machine's `/usr/bin/prometheus`: `avsnode-prometheus:test`.
pub fn prometheus_image() -> String {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tag = "avsnode-prometheus:test".to_owned();
            build_with_script(&["prometheus", "--tag", &tag]);
            tag
        })
        .clone()
}

fn build_with_script(args: &[&str]) {
    let script = crate::workspace_root().join("deploy/build-image.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "deploy/build-image.sh {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout).trim());
    }
}

/// The example performer built as a static executable (once per process): a `FROM scratch`
/// image has no C library to link against.
fn static_example() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = &*built {
        return path.clone();
    }
    // Same target dir and profile as the running test; its own `--target` folder, so the
    // static-linking flags never invalidate the normal build.
    let profile_dir = crate::profile_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("profile folder name")
        .to_owned();
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut target_dir = profile_dir.parent().expect("target folder").to_path_buf();
    if target_dir
        .file_name()
        .is_some_and(|name| name == triple.as_str())
    {
        target_dir.pop();
    }
    let rustflags = match std::env::var("RUSTFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} -C target-feature=+crt-static"),
        _ => "-C target-feature=+crt-static".to_owned(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root())
        .env("RUSTFLAGS", rustflags)
        // It would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args([
            "build", "--quiet", "-p", BINARY, "--bin", BINARY, "--target", &triple,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if profile != "debug" {
        cmd.args(["--profile", &profile]);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo build --target {triple}: {e}"));
    assert!(
        status.success(),
        "cargo build of the static {BINARY} failed"
    );
    let path = target_dir.join(&triple).join(&profile).join(BINARY);
    match is_static(&path) {
        Ok(true) => {}
        Ok(false) => panic!("{} is dynamically linked", path.display()),
        Err(e) => panic!("{}: {e}", path.display()),
    }
    *built = Some(path.clone());
    path
}

/// Whether an ELF executable has no program interpreter (`PT_INTERP`), i.e. needs no dynamic
/// loader. Reads the 64-bit little-endian layout only.
fn is_static(path: &Path) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let at = |offset: usize, len: usize| {
        bytes
            .get(offset..offset + len)
            .ok_or_else(|| "truncated ELF file".to_owned())
    };
    if at(0, 4)? != b"\x7fELF" || at(4, 2)? != [2, 1] {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |offset| at(offset, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let phoff = at(0x20, 8)?;
    let phoff = usize::try_from(u64::from_le_bytes(
        phoff.try_into().map_err(|_| "bad offset")?,
    ))
    .map_err(|e| e.to_string())?;
    let (entry_size, entries) = (u16_at(0x36)?, u16_at(0x38)?);
    for i in 0..entries {
        let p_type = at(phoff + i * entry_size, 4)?;
        if u32::from_le_bytes([p_type[0], p_type[1], p_type[2], p_type[3]]) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_executables_are_dynamic() {
        // The test harness itself is linked the usual (dynamic) way.
        let exe = std::env::current_exe().expect("test executable");
        assert_eq!(is_static(&exe), Ok(false));
        assert!(is_static(Path::new("/nonexistent")).is_err());
    }
}
