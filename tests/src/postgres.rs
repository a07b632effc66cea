//! A private PostgreSQL 15 server for the tests that need a shared ledger: its own data folder
//! in a temporary directory, its own port on 127.0.0.1, a password-protected role, stopped (and
//! its folder removed) on drop. The tests can stop and start it again to see what the node does
//! while the database is gone.
//!
//! PostgreSQL refuses to run as root: run as root (as CI does), the server runs as the `postgres`
//! user that Debian's package creates, and owns its folder.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's PostgreSQL 15 programs.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The role and database the tests use.
pub const USER: &str = "avsnode";
/// The role's password (what a `password_file` holds).
pub const PASSWORD: &str = "pg-test-Vq83-secret";

/// Whether PostgreSQL 15 is installed. If not, prints `skipping: …` and returns false, so a test
/// can `if !postgres_available() { return; }` — except on CI (`CI=true`), where it panics:
/// `.ci/run` installs it.
pub fn postgres_available() -> bool {
    if Path::new(BIN).join("initdb").exists() {
        return true;
    }
    let reason = format!("{BIN}/initdb is missing");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("PostgreSQL 15 is not installed on CI ({reason}); .ci/run installs postgresql-15");
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "skipping: PostgreSQL 15 is not installed ({reason}); apt-get install postgresql-15"
        );
    }
    false
}

/// A running server. Dropping it stops the server at once (`immediate`) and removes its folder.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// A file holding [`PASSWORD`] (mode 0600).
    pub password_file: PathBuf,
}

impl Postgres {
    /// Creates a cluster with the role and database [`USER`] (password [`PASSWORD`], SCRAM over
    /// TCP) and starts it.
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let as_root = running_as_root();
        if as_root {
            chown_to_postgres(dir.path());
        }
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("writing the password");
        std::fs::set_permissions(
            &password_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod 600 the password file");
        if as_root {
            chown_to_postgres(&password_file);
        }
        let port = free_port();
        let server = Postgres {
            dir,
            port,
            password_file,
        };
        server.run(
            "initdb",
            &[
                "--pgdata".as_ref(),
                server.data().as_os_str(),
                "--username".as_ref(),
                USER.as_ref(),
                "--pwfile".as_ref(),
                server.password_file.as_os_str(),
                "--auth-host=scram-sha-256".as_ref(),
                "--auth-local=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--no-instructions".as_ref(),
            ],
        );
        server.start_again();
        server.run(
            "createdb",
            &[
                "--host".as_ref(),
                server.dir.path().as_os_str(),
                "--port".as_ref(),
                port.to_string().as_ref(),
                "--username".as_ref(),
                USER.as_ref(),
                USER.as_ref(),
            ],
        );
        server
    }

    /// The connection URL (no password in it: that is in [`Postgres::password_file`]).
    pub fn url(&self) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{USER}", self.port)
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "--pgdata".as_ref(),
                self.data().as_os_str(),
                "--mode=immediate".as_ref(),
                "--wait".as_ref(),
            ],
        );
    }

    /// Starts the (stopped) server again on the same port.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "--pgdata".as_ref(),
                self.data().as_os_str(),
                "--log".as_ref(),
                self.dir.path().join("server.log").as_os_str(),
                "--options".as_ref(),
                options.as_ref(),
                "--wait".as_ref(),
            ],
        );
    }

    /// Runs `sql` in the test database with `psql`, as the owner role (over the server's Unix
    /// socket); panics if it fails.
    pub fn sql(&self, sql: &str) {
        self.run(
            "psql",
            &[
                "--host".as_ref(),
                self.dir.path().as_os_str(),
                "--port".as_ref(),
                self.port.to_string().as_ref(),
                "--username".as_ref(),
                USER.as_ref(),
                "--dbname".as_ref(),
                USER.as_ref(),
                "--set=ON_ERROR_STOP=1".as_ref(),
                "--command".as_ref(),
                sql.as_ref(),
            ],
        );
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Turns TLS on with this certificate and key (copied into the server's folder, owned by the
    /// server's user) and reloads the configuration; plain connections keep working.
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.data().join(name);
            std::fs::copy(from, &to).expect("copying the TLS files");
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod 600");
            if running_as_root() {
                chown_to_postgres(&to);
            }
        }
        self.sql("ALTER SYSTEM SET ssl = on");
        self.sql("SELECT pg_reload_conf()");
    }

    /// Runs a PostgreSQL program (as `postgres` when the tests run as root); panics with its
    /// output if it fails.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = command(program)
            .args(args)
            .env("PGPASSWORD", PASSWORD)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

/// A PostgreSQL program, run as `postgres` when the tests run as root.
fn command(program: &str) -> Command {
    let path = Path::new(BIN).join(program);
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Already stopped by the test is fine.
        let _ = command("pg_ctl")
            .args(["stop", "--mode=immediate", "--wait", "--pgdata"])
            .arg(self.data())
            .output();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn chown_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .expect("running chown");
    assert!(status.success(), "chown postgres {}", path.display());
}

/// A port nothing listens on now (bound and released; PostgreSQL takes it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
