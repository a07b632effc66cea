//! The remote signer (`avsnode signer serve`) and the node's client of it, over real mTLS
//! sockets on loopback: certificates are generated at run time (a CA, a server certificate for
//! 127.0.0.1/localhost, three client certificates), keys of all three schemes live in light-KDF
//! keystores, and the signer runs in this process on an ephemeral port.
//!
//! Run the measurement with `cargo test -p avsnode-tests --test node remote_signer:: -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use avsnode::listeners::SIGNER_LIMITS;
use avsnode_aggregator::{NewTask, OperatorKey, verify_result};
use avsnode_keystore::{Kdf, Password};
use avsnode_listener::Gate;
use avsnode_proto::executor::TaskResult;
use avsnode_proto::signer::signer_client::SignerClient;
use avsnode_proto::signer::{ListKeysRequest, SignResultRequest};
use avsnode_signer::Scheme;
use avsnode_signer::messages::{
    Address, AuthMessage, EcdsaVerifier, ResultCertificate, TaskId, certificate_digest, keccak256,
};
use avsnode_signing::remote::{
    RemoteKey, RemoteSignerError, RemoteSignerSpec, SignFields, SignerServiceConfig, serve,
};
use avsnode_signing::{LocalKey, ResultSignatures};
use avsnode_tests::pki;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const SCHEMES: [Scheme; 3] = [Scheme::Ecdsa, Scheme::Bn254, Scheme::Bls12381];
const PASSWORD: &str = "remote-signer-test-password";

fn key_name(scheme: Scheme) -> String {
    format!("{scheme}-key")
}

fn address(seed: u8) -> Address {
    Address([seed; 20])
}

fn verifier() -> EcdsaVerifier {
    EcdsaVerifier {
        address: address(0xc0),
        version: "1".into(),
    }
}

/// A task id no other call in this process uses.
fn fresh_task_id() -> TaskId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    TaskId(keccak256(
        &[&nanos.to_be_bytes()[..], &n.to_be_bytes()].concat(),
    ))
}

/// Everything a test needs on disk: certificates, keystores, the signer's config and data dir.
struct Setup {
    dir: tempfile::TempDir,
    /// The keys the signer holds, by scheme, to sign locally for comparison.
    keys: Vec<(Scheme, LocalKey)>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("avsnode-remote-signer-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        // Client 3 is not configured on the signer.
        pki::write(d, &["client1", "client2", "client3"]);
        let password = Password::new(PASSWORD);
        let mut keys = Vec::new();
        let mut key_tables = String::new();
        // Three keys for client 1, one more (BLS) for client 2 only.
        let names: Vec<(Scheme, String)> = SCHEMES
            .iter()
            .map(|&s| (s, key_name(s)))
            .chain([(Scheme::Bls12381, "client2-key".to_owned())])
            .collect();
        for (scheme, name) in &names {
            let key = LocalKey::generate(*scheme);
            key.encrypt(&password, &Kdf::light())
                .unwrap()
                .write_new(&d.join(format!("{name}.json")))
                .unwrap();
            avsnode_keystore::write_private(
                &d.join(format!("{name}.pass")),
                format!("{PASSWORD}\n").as_bytes(),
            )
            .unwrap();
            key_tables.push_str(&format!(
                "[[key]]\nname = \"{name}\"\nscheme = \"{scheme}\"\nkeystore = \"{name}.json\"\npassword_file = \"{name}.pass\"\n\n"
            ));
            if name != "client2-key" {
                keys.push((*scheme, key));
            }
        }
        let client1_keys = SCHEMES
            .iter()
            .map(|&s| format!("\"{}\"", key_name(s)))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            r#"listen = "127.0.0.1:0"
data_dir = "signer-data"
ledger_commit_delay = "1ms"

[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"

{key_tables}[[client]]
name = "node-1"
certificate = "client1.pem"
keys = [{client1_keys}]

[[client]]
name = "node-2"
certificate = "client2.pem"
keys = ["client2-key"]
"#
        );
        std::fs::write(d.join("signer.toml"), config).unwrap();
        Setup { dir, keys }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Keeps the signer's ledger in `server`'s database (`[postgres]`), shared by every signer
    /// started from this setup.
    fn use_postgres(&self, server: &avsnode_tests::postgres::Postgres) {
        let path = self.path("signer.toml");
        let mut config = std::fs::read_to_string(&path).unwrap();
        config.push_str(&format!(
            "\n[postgres]\nurl = {:?}\npassword_file = {:?}\n",
            server.url(),
            server.password_file.display().to_string()
        ));
        std::fs::write(path, config).unwrap();
    }

    fn config(&self) -> SignerServiceConfig {
        SignerServiceConfig::load(&self.path("signer.toml")).unwrap()
    }

    fn local(&self, scheme: Scheme) -> &LocalKey {
        &self.keys.iter().find(|(s, _)| *s == scheme).unwrap().1
    }

    /// The spec of `client` (1, 2 or 3) for `key`.
    fn spec(&self, addr: SocketAddr, client: u32, key: &str) -> RemoteSignerSpec {
        RemoteSignerSpec::new(
            format!("https://{addr}"),
            self.path("ca.pem"),
            self.path(&format!("client{client}.pem")),
            self.path(&format!("client{client}.key")),
            key,
        )
    }

    /// A raw generated client: `client` 1–3 with that certificate, 0 with none.
    async fn raw_client(
        &self,
        addr: SocketAddr,
        client: u32,
    ) -> Result<SignerClient<Channel>, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
            std::fs::read(self.path("ca.pem")).unwrap(),
        ));
        if client > 0 {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(self.path(&format!("client{client}.pem"))).unwrap(),
                std::fs::read(self.path(&format!("client{client}.key"))).unwrap(),
            ));
        }
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok(SignerClient::new(channel))
    }
}

/// The signer, serving in a task of this process.
struct RunningSigner {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RemoteSignerError>>,
}

impl RunningSigner {
    async fn start(setup: &Setup, addr: Option<SocketAddr>) -> RunningSigner {
        let config = setup.config();
        let listener = TcpListener::bind(addr.unwrap_or(config.listen))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = Gate::new("signer", SIGNER_LIMITS, None).incoming(listener);
        let task = tokio::spawn(serve(config, incoming, async {
            let _ = stopped.await;
        }));
        // Serving once a client can list its keys.
        let started = Instant::now();
        loop {
            if let Ok(mut client) = setup.raw_client(addr, 1).await
                && client.list_keys(ListKeysRequest {}).await.is_ok()
            {
                break;
            }
            assert!(!task.is_finished(), "the signer stopped while starting");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the signer did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        RunningSigner {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the signer stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

/// One task's fields for `scheme`'s key.
struct Task {
    task_id: TaskId,
    output: Vec<u8>,
    reference_timestamp: u32,
    verifier: Option<EcdsaVerifier>,
}

impl Task {
    fn new(scheme: Scheme, output: &[u8]) -> Task {
        Task {
            task_id: fresh_task_id(),
            output: output.to_vec(),
            reference_timestamp: 1_700_000_000,
            verifier: (scheme == Scheme::Ecdsa).then(verifier),
        }
    }

    fn fields(&self) -> SignFields<'_> {
        SignFields {
            task_id: self.task_id,
            avs: address(0xa5),
            operator_set_id: 7,
            reference_timestamp: self.reference_timestamp,
            output: &self.output,
            operator: address(0x0b),
            verifier: self.verifier.as_ref(),
        }
    }

    fn request(&self, key: &str) -> SignResultRequest {
        let f = self.fields();
        SignResultRequest {
            key: key.to_owned(),
            task_id: f.task_id.0.to_vec(),
            avs: f.avs.to_string(),
            operator_set_id: f.operator_set_id,
            reference_timestamp: f.reference_timestamp,
            output: f.output.to_vec(),
            operator: f.operator.to_string(),
            verifier: f
                .verifier
                .map(|v| v.address.to_string())
                .unwrap_or_default(),
            verifier_version: f.verifier.map(|v| v.version.clone()).unwrap_or_default(),
        }
    }

    /// What the node would sign locally with `key`.
    fn sign_locally(&self, key: &LocalKey) -> ResultSignatures {
        let f = self.fields();
        let certificate = ResultCertificate::new(key.scheme(), f.verifier).unwrap();
        let (_, digest) =
            certificate_digest(&certificate, &f.task_id, f.reference_timestamp, f.output);
        key.sign_result(
            &digest,
            AuthMessage {
                task_id: f.task_id,
                avs: f.avs,
                operator: f.operator,
                operator_set_id: f.operator_set_id,
                result_signature: &[],
            },
        )
    }

    /// Verifies the signatures as an aggregator would.
    fn verify(&self, key: &LocalKey, signatures: &ResultSignatures) {
        let f = self.fields();
        let task = NewTask {
            task_id: f.task_id,
            avs: f.avs,
            operator: f.operator,
            operator_set_id: f.operator_set_id,
            reference_timestamp: f.reference_timestamp,
            task_block_number: 1,
            payload: Vec::new(),
            deadline_unix_ms: None,
        };
        let result = TaskResult {
            task_id: f.task_id.to_wire_string(),
            operator_address: f.operator.to_string(),
            output: self.output.clone(),
            result_signature: signatures.result.clone(),
            avs_address: f.avs.to_string(),
            operator_set_id: f.operator_set_id,
            auth_signature: signatures.auth.clone(),
            version: 1,
        };
        let public = OperatorKey::of(key, self.verifier.clone()).unwrap();
        verify_result(&result, &task, &public).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_signatures_are_byte_identical_to_local_ones_for_every_scheme() {
    let setup = Setup::new();
    let signer = RunningSigner::start(&setup, None).await;
    for scheme in SCHEMES {
        let local = setup.local(scheme);
        let remote = RemoteKey::connect(setup.spec(signer.addr, 1, &key_name(scheme)))
            .await
            .unwrap();
        assert_eq!(remote.scheme(), scheme);
        assert_eq!(remote.public_bytes(), local.public_bytes().as_slice());
        assert_eq!(remote.key_id(), local.key_id());
        let debug = format!("{remote:?}");
        assert!(debug.contains(&key_name(scheme)) && debug.contains("https://127.0.0.1"));

        for output in [&b""[..], b"output", &[0xab; 100]] {
            let task = Task::new(scheme, output);
            let signed = remote.sign_result(task.fields()).await.unwrap();
            assert_eq!(signed, task.sign_locally(local), "{scheme}");
            task.verify(local, &signed);
            // A retry gets the same bytes (from the signer's ledger).
            assert_eq!(remote.sign_result(task.fields()).await.unwrap(), signed);
        }
    }
    signer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_identified_by_certificate_and_see_only_their_keys() {
    let setup = Setup::new();
    let signer = RunningSigner::start(&setup, None).await;
    let addr = signer.addr;
    let task = Task::new(Scheme::Bn254, b"out");

    // No certificate: the handshake is refused, so no call ever gets an answer.
    match setup.raw_client(addr, 0).await {
        Err(_) => {}
        Ok(mut client) => {
            let listed = client.list_keys(ListKeysRequest {}).await;
            assert!(
                listed.is_err(),
                "a client without a certificate listed keys"
            );
            let signed = client
                .sign_result(task.request(&key_name(Scheme::Bn254)))
                .await;
            let status = signed.expect_err("a client without a certificate got a signature");
            // Refused in the handshake, which the client sees on its first call (how depends on
            // timing: the connection is closed or reset).
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Cancelled | Code::Unknown | Code::PermissionDenied
                ),
                "{status:?}"
            );
        }
    }

    // Client 2 sees only its own key, and is denied client 1's as if it did not exist.
    let mut client2 = setup.raw_client(addr, 2).await.unwrap();
    let listed = client2
        .list_keys(ListKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["client2-key"]);
    let status = client2
        .sign_result(task.request(&key_name(Scheme::Bn254)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let missing = client2
        .sign_result(task.request("no-such-key"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::PermissionDenied);
    assert_eq!(
        status.message().replace(&key_name(Scheme::Bn254), "K"),
        missing.message().replace("no-such-key", "K"),
        "an existing key of another client is answered like a missing one"
    );
    match RemoteKey::connect(setup.spec(addr, 2, &key_name(Scheme::Bn254))).await {
        Err(RemoteSignerError::UnknownKey { available, .. }) => {
            assert_eq!(available, ["client2-key"])
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }

    // Client 3's certificate chains to the CA but is not configured: denied.
    let mut client3 = setup.raw_client(addr, 3).await.unwrap();
    let status = client3.list_keys(ListKeysRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client3
        .sign_result(task.request(&key_name(Scheme::Bn254)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(matches!(
        RemoteKey::connect(setup.spec(addr, 3, &key_name(Scheme::Bn254))).await,
        Err(RemoteSignerError::Denied { .. })
    ));

    // Client 1 may use the key.
    let mut client1 = setup.raw_client(addr, 1).await.unwrap();
    client1
        .sign_result(task.request(&key_name(Scheme::Bn254)))
        .await
        .unwrap();
    signer.stop().await;
}

/// Two signer hosts on one PostgreSQL ledger (replicated signers): whichever is asked, a task is
/// signed over one output only, the same request gets the same bytes from either, and two
/// different outputs sent to both at once end with exactly one signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_signers_on_one_database_sign_each_task_once() {
    if !avsnode_tests::postgres::postgres_available() {
        return;
    }
    let server = avsnode_tests::postgres::Postgres::start();
    let setup = Setup::new();
    setup.use_postgres(&server);
    let (a, b) = (
        RunningSigner::start(&setup, None).await,
        RunningSigner::start(&setup, None).await,
    );
    let mut on_a = setup.raw_client(a.addr, 1).await.unwrap();
    let mut on_b = setup.raw_client(b.addr, 1).await.unwrap();
    for scheme in SCHEMES {
        let key = key_name(scheme);
        let task = Task::new(scheme, b"first output");
        let first = on_a
            .sign_result(task.request(&key))
            .await
            .unwrap()
            .into_inner();
        let mut other = task.request(&key);
        other.output = b"second output".to_vec();
        let status = on_b.sign_result(other).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        let again = on_b
            .sign_result(task.request(&key))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, first, "{scheme}: the same bytes from either signer");

        // Two outputs at once, one per signer: one is signed, the other refused.
        let racing = Task::new(scheme, b"output A");
        let mut request_b = racing.request(&key);
        request_b.output = b"output B".to_vec();
        let (mut race_a, mut race_b) = (on_a.clone(), on_b.clone());
        let (ra, rb) = tokio::join!(
            race_a.sign_result(racing.request(&key)),
            race_b.sign_result(request_b)
        );
        let signed = [ra.is_ok(), rb.is_ok()];
        assert_eq!(signed.iter().filter(|s| **s).count(), 1, "{ra:?} {rb:?}");
        for refused in [ra.err(), rb.err()].into_iter().flatten() {
            assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asked_directly_the_signer_refuses_a_second_output_for_a_signed_task() {
    let setup = Setup::new();
    let signer = RunningSigner::start(&setup, None).await;
    let mut client = setup.raw_client(signer.addr, 1).await.unwrap();
    for scheme in SCHEMES {
        let key = key_name(scheme);
        let task = Task::new(scheme, b"first output");
        let first = client
            .sign_result(task.request(&key))
            .await
            .unwrap()
            .into_inner();

        let mut other = task.request(&key);
        other.output = b"second output".to_vec();
        let status = client.sign_result(other).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains(&task.task_id.to_string()),
            "names the task: {}",
            status.message()
        );
        // Another reference timestamp is another digest too.
        let mut other = task.request(&key);
        other.reference_timestamp += 1;
        assert_eq!(
            client.sign_result(other).await.unwrap_err().code(),
            Code::FailedPrecondition
        );

        let again = client
            .sign_result(task.request(&key))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            again, first,
            "{scheme}: the same request gets the same bytes"
        );

        // Through RemoteKey the refusal is typed, and not "unavailable".
        let remote = RemoteKey::connect(setup.spec(signer.addr, 1, &key))
            .await
            .unwrap();
        let mut changed = Task::new(scheme, b"third output");
        changed.task_id = task.task_id;
        let err = remote.sign_result(changed.fields()).await.unwrap_err();
        assert!(matches!(err, RemoteSignerError::Refused { .. }), "{err:?}");
        assert!(!err.is_unavailable());
    }

    // Malformed requests are refused before anything is signed.
    let task = Task::new(Scheme::Ecdsa, b"x");
    let mut no_verifier = task.request(&key_name(Scheme::Ecdsa));
    no_verifier.verifier.clear();
    no_verifier.verifier_version.clear();
    assert_eq!(
        client.sign_result(no_verifier).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut with_verifier = Task::new(Scheme::Bn254, b"x").request(&key_name(Scheme::Bn254));
    with_verifier.verifier = address(1).to_string();
    with_verifier.verifier_version = "1".into();
    assert_eq!(
        client.sign_result(with_verifier).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut short_id = task.request(&key_name(Scheme::Ecdsa));
    short_id.task_id.pop();
    assert_eq!(
        client.sign_result(short_id).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    signer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_signer_is_unavailable_and_a_restarted_one_resumes_with_its_ledger() {
    let setup = Setup::new();
    let signer = RunningSigner::start(&setup, None).await;
    let addr = signer.addr;
    let scheme = Scheme::Bn254;
    let remote = RemoteKey::connect(setup.spec(addr, 1, &key_name(scheme)))
        .await
        .unwrap();
    let old = Task::new(scheme, b"before the restart");
    let old_signatures = remote.sign_result(old.fields()).await.unwrap();

    signer.stop().await;
    let task = Task::new(scheme, b"while down");
    let started = Instant::now();
    let err = remote.sign_result(task.fields()).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(took < Duration::from_secs(5), "failed after {took:?}");
    println!("stopped signer: first call failed in {took:?}: {err}");

    // Five consecutive failures open the circuit: then calls fail at once.
    for _ in 1..5 {
        let err = remote.sign_result(task.fields()).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }
    let started = Instant::now();
    let err = remote.sign_result(task.fields()).await.unwrap_err();
    assert!(matches!(err, RemoteSignerError::Down { .. }), "{err:?}");
    assert!(err.is_unavailable());
    assert!(started.elapsed() < Duration::from_millis(50));

    // Restarted on the same port and data directory: the next call after the circuit's window
    // succeeds, and the old task's answer comes from the persisted ledger.
    let signer = RunningSigner::start(&setup, Some(addr)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let signed = loop {
        match remote.sign_result(task.fields()).await {
            Ok(signed) => break signed,
            Err(e) => {
                assert!(e.is_unavailable(), "{e:?}");
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    task.verify(setup.local(scheme), &signed);
    assert_eq!(
        remote.sign_result(old.fields()).await.unwrap(),
        old_signatures
    );
    let mut changed = Task::new(scheme, b"another output after the restart");
    changed.task_id = old.task_id;
    assert!(matches!(
        remote.sign_result(changed.fields()).await,
        Err(RemoteSignerError::Refused { .. })
    ));
    signer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_the_key() {
    let setup = Setup::new();
    let text = std::fs::read_to_string(setup.path("signer.toml")).unwrap();
    let path = setup.path("signer.toml");

    let unknown = text.replace("keys = [\"client2-key\"]", "keys = [\"nope\"]");
    let err = SignerServiceConfig::from_toml(&unknown, &path).unwrap_err();
    assert!(err.to_string().contains("client[1].keys[0]"), "{err}");

    let typo = text.replace("client_ca =", "clientca =");
    let err = SignerServiceConfig::from_toml(&typo, &path).unwrap_err();
    assert!(err.to_string().contains("clientca"), "{err}");

    let anonymous = text.replace("certificate = \"client2.pem\"\n", "");
    let err = SignerServiceConfig::from_toml(&anonymous, &path).unwrap_err();
    assert!(err.to_string().contains("client[1].certificate"), "{err}");
    let allowed = anonymous.replace(
        "client_ca = \"ca.pem\"",
        "client_ca = \"ca.pem\"\nrequire_client_cert = false",
    );
    let config = SignerServiceConfig::from_toml(&allowed, &path).unwrap();
    assert!(!config.tls.require_client_cert);
    // Relative paths are relative to the file.
    assert_eq!(config.data_dir, setup.path("signer-data"));
    assert_eq!(config.tls.cert, setup.path("server.pem"));
}

/// Signatures per second and latency of `RemoteKey::sign_result` over mTLS on loopback,
/// sequential calls with distinct task ids, per scheme: 2,000 calls each with
/// `AVSNODE_MEASURE=1` (run it in release, alone), 100 otherwise (a smoke run of the same path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_remote_signing_throughput_and_latency() {
    let calls: usize = if std::env::var_os("AVSNODE_MEASURE").is_some() {
        2_000
    } else {
        100
    };
    let setup = Setup::new();
    let signer = RunningSigner::start(&setup, None).await;
    for scheme in SCHEMES {
        let remote = RemoteKey::connect(setup.spec(signer.addr, 1, &key_name(scheme)))
            .await
            .unwrap();
        let tasks: Vec<Task> = (0..calls).map(|_| Task::new(scheme, &[7; 64])).collect();
        let mut latencies = Vec::with_capacity(calls);
        let started = Instant::now();
        for task in &tasks {
            let t = Instant::now();
            remote.sign_result(task.fields()).await.unwrap();
            latencies.push(t.elapsed());
        }
        let total = started.elapsed();
        latencies.sort();
        let p =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "remote signer {scheme:>9}: {calls} sequential sign_result calls in {:.2} s: {:.0} results/s ({:.0} signatures/s), p50 {:.2} ms, p99 {:.2} ms",
            total.as_secs_f64(),
            calls as f64 / total.as_secs_f64(),
            2.0 * calls as f64 / total.as_secs_f64(),
            p(0.50).as_secs_f64() * 1e3,
            p(0.99).as_secs_f64() * 1e3,
        );
        // Spot-check the last one.
        let last = tasks.last().unwrap();
        last.verify(
            setup.local(scheme),
            &remote.sign_result(last.fields()).await.unwrap(),
        );
    }
    signer.stop().await;
}
