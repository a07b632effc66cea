//! The PKCS#11 backend against a real SoftHSM2 token (DESIGN §4.5, §10).
//!
//! Each test runs in a child process with a fresh token of its own (`avsnode_tests::softhsm::in_child`:
//! SoftHSM reads `SOFTHSM2_CONF` once, when the module is loaded), so tests are isolated and still
//! run in parallel. Foreign keys are made with `pkcs11-tool`.
//!
//! Without SoftHSM the tests print why and pass, except under `CI=true`, where they fail.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use avsnode_signer::ecdsa;
use avsnode_signer::messages::{Address, AuthMessage, SigningDigest, TaskId};
use avsnode_signing::pkcs11::{self, HsmError, Pin, Pkcs11Key, Pkcs11Spec};
use avsnode_tests::softhsm::{MODULE, PIN, SO_PIN, in_child};

/// Generous: SoftHSM answers in microseconds, but CI machines are loaded.
const FAST: Duration = Duration::from_secs(5);

/// The key `key_label` on the token `token_label`, opened with the test PIN.
fn key_spec(token_label: &str, key_label: &str) -> Pkcs11Spec {
    Pkcs11Spec {
        module: PathBuf::from(MODULE),
        token_label: token_label.to_owned(),
        key_label: Some(key_label.to_owned()),
        key_id: None,
        pin: Pin::new(PIN),
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A distinct digest per `n`, made the only way outside the signer crate: from a typed layout.
fn digest(n: u64) -> SigningDigest {
    let mut task = [0u8; 32];
    task[24..].copy_from_slice(&n.to_be_bytes());
    AuthMessage {
        task_id: TaskId(task),
        avs: Address([0xaa; 20]),
        operator: Address([0xbb; 20]),
        operator_set_id: 1,
        result_signature: b"hsm test",
    }
    .digest()
}

/// Checks a signature the way a verifier does, and that it is canonical.
fn check(sig: &ecdsa::Signature, digest: &SigningDigest, address: &Address) {
    assert!(sig.is_low_s(), "high-s signature {sig:?}");
    assert!(matches!(sig.to_bytes()[64], 27 | 28));
    assert_eq!(
        ecdsa::recover_address(digest.as_bytes(), sig).as_ref(),
        Ok(address),
        "v must recover the key's address"
    );
}

/// Neither `Debug` nor `Display` (with the whole source chain) shows the PIN, in text or hex.
fn assert_redacted(value: &(impl fmt::Debug + ?Sized), display: Option<&dyn std::error::Error>) {
    let mut shown = format!("{value:?}");
    let mut source = display;
    while let Some(error) = source {
        shown.push_str(&format!(" / {error}"));
        source = error.source();
    }
    for secret in [PIN, SO_PIN] {
        assert!(!shown.contains(secret), "PIN in {shown}");
        assert!(!shown.contains(&hex::encode(secret)), "hex PIN in {shown}");
    }
}

fn assert_error_redacted(error: &HsmError) {
    assert_redacted(error, Some(error));
}

/// (a) generate on the token → open by label → 1,000 signatures over distinct digests, each
/// low-s with the right `v` (sequentially, timed, and again from 8 threads through the 4-session
/// pool); open by key id; `hsm-list`; and the named errors.
#[test]
fn generated_key_signs_low_s_with_the_right_v() {
    in_child(
        "generated_key_signs_low_s_with_the_right_v",
        "avs-a",
        |_token| {
            let spec = key_spec("avs-a", "operator");
            assert_redacted(&spec, None);
            let public = pkcs11::generate(&spec).expect("generate");
            let key = Pkcs11Key::open(spec.clone()).expect("open by label");
            assert_eq!(key.public_key(), &public);
            let address = key.address();
            assert_redacted(&key, None);
            assert!(format!("{key:?}").contains(&address.to_string()));

            // Sequential, timed: signatures/s and latency percentiles of one caller.
            let mut latencies = Vec::with_capacity(1000);
            let started = Instant::now();
            for n in 0..1000 {
                let d = digest(n);
                let t = Instant::now();
                let sig = key.sign(&d).expect("sign");
                latencies.push(t.elapsed());
                check(&sig, &d, &address);
            }
            let elapsed = started.elapsed();
            latencies.sort();
            println!(
                "PKCS#11 (SoftHSM) sequential: 1000 signatures in {elapsed:?} = {:.0} signatures/s; p50 {:?}, p99 {:?}, max {:?}",
                1000.0 / elapsed.as_secs_f64(),
                latencies[499],
                latencies[989],
                latencies[999],
            );

            // Concurrent: 8 callers share the pool (at most 4 sessions).
            let started = Instant::now();
            let latencies = Mutex::new(Vec::with_capacity(1000));
            std::thread::scope(|s| {
                for t in 0..8u64 {
                    let key = &key;
                    let latencies = &latencies;
                    s.spawn(move || {
                        for n in (1000 + t * 125)..(1000 + (t + 1) * 125) {
                            let d = digest(n);
                            let started = Instant::now();
                            let sig = key.sign(&d).expect("sign");
                            latencies.lock().expect("lock").push(started.elapsed());
                            check(&sig, &d, &address);
                        }
                    });
                }
            });
            let elapsed = started.elapsed();
            let mut latencies = latencies.into_inner().expect("lock");
            latencies.sort();
            println!(
                "PKCS#11 (SoftHSM) 8 threads: 1000 signatures in {elapsed:?} = {:.0} signatures/s; p50 {:?}, p99 {:?}",
                1000.0 / elapsed.as_secs_f64(),
                latencies[499],
                latencies[989],
            );

            // Randomised: the same digest signed twice gives different (both valid) signatures.
            let d = digest(7);
            let (a, b) = (key.sign(&d).expect("sign"), key.sign(&d).expect("sign"));
            assert_ne!(a, b);
            check(&b, &d, &address);

            // hsm-list shows the key; its id opens the same key.
            let listed = pkcs11::list(Path::new(MODULE), "avs-a", &Pin::new(PIN)).expect("list");
            assert_eq!(listed.len(), 1, "{listed:?}");
            assert_eq!(listed[0].label, "operator");
            assert_eq!(listed[0].address, address);
            assert_eq!(listed[0].id.len(), 16, "random 16-byte CKA_ID");
            let by_id = Pkcs11Key::open(Pkcs11Spec {
                key_label: None,
                key_id: Some(listed[0].id.clone()),
                ..spec.clone()
            })
            .expect("open by id");
            assert_eq!(by_id.address(), address);
            let d = digest(5000);
            check(&by_id.sign(&d).expect("sign by id"), &d, &address);

            // The label is taken now.
            let error = pkcs11::generate(&spec).expect_err("label taken");
            assert!(
                matches!(&error, HsmError::KeyExists { label, .. } if label == "operator"),
                "{error:?}"
            );
            assert_error_redacted(&error);

            // No such key, by label or by id.
            let error = Pkcs11Key::open(key_spec("avs-a", "nobody")).expect_err("no key");
            assert!(matches!(error, HsmError::KeyNotFound { .. }), "{error:?}");
            assert!(error.to_string().contains("\"nobody\""), "{error}");
            assert_error_redacted(&error);
            let error = Pkcs11Key::open(Pkcs11Spec {
                key_label: None,
                key_id: Some(vec![0xde, 0xad]),
                ..spec.clone()
            })
            .expect_err("no key");
            assert!(error.to_string().contains("id dead"), "{error}");
            assert_error_redacted(&error);

            // No such token: the error lists the ones there are.
            let error = Pkcs11Key::open(key_spec("avs-typo", "operator")).expect_err("no token");
            match &error {
                HsmError::TokenNotFound { label, available } => {
                    assert_eq!(label, "avs-typo");
                    assert_eq!(available, &["avs-a".to_owned()]);
                }
                other => panic!("expected TokenNotFound, got {other:?}"),
            }
            assert!(error.to_string().contains("\"avs-a\""), "{error}");
            assert_error_redacted(&error);
        },
    );
}

/// A wrong PIN is a named login error that does not repeat the PIN. Runs with no other session
/// logged in: PKCS#11 login state is per token, so a second login would not check the PIN.
#[test]
fn wrong_pin_is_a_named_error_without_the_pin() {
    in_child(
        "wrong_pin_is_a_named_error_without_the_pin",
        "avs-pin",
        |_token| {
            pkcs11::generate(&key_spec("avs-pin", "operator")).expect("generate");
            let wrong = "9999-wrong-Pk";
            let error = Pkcs11Key::open(Pkcs11Spec {
                pin: Pin::new(wrong),
                ..key_spec("avs-pin", "operator")
            })
            .expect_err("wrong PIN");
            assert!(matches!(error, HsmError::LoginFailed { .. }), "{error:?}");
            assert_error_redacted(&error);
            let mut chain = format!("{error:?} {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(s) = source {
                chain.push_str(&format!(" / {s}"));
                source = s.source();
            }
            assert!(!chain.contains(wrong), "{chain}");
            assert!(chain.contains("PIN is incorrect"), "{chain}");

            let error =
                pkcs11::list(Path::new(MODULE), "avs-pin", &Pin::new(wrong)).expect_err("list");
            assert!(matches!(error, HsmError::LoginFailed { .. }), "{error:?}");

            // The right PIN still works (SoftHSM has not locked the token after two tries).
            Pkcs11Key::open(key_spec("avs-pin", "operator")).expect("right PIN");
        },
    );
}

/// A P-256 key (made by `pkcs11-tool`) is refused by name and curve; `hsm-list` leaves it out.
#[test]
fn non_secp256k1_key_is_refused() {
    in_child("non_secp256k1_key_is_refused", "avs-p256", |_token| {
        run(Command::new("pkcs11-tool").args([
            "--module",
            MODULE,
            "--token-label",
            "avs-p256",
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "p256",
            "--id",
            "0102",
        ]));
        let error = Pkcs11Key::open(key_spec("avs-p256", "p256")).expect_err("P-256");
        assert!(matches!(error, HsmError::NotSecp256k1 { .. }), "{error:?}");
        let shown = error.to_string();
        assert!(shown.contains("not secp256k1"), "{shown}");
        assert!(shown.contains("1.2.840.10045.3.1.7 (P-256)"), "{shown}");
        assert_error_redacted(&error);

        pkcs11::generate(&key_spec("avs-p256", "k1")).expect("generate");
        let listed = pkcs11::list(Path::new(MODULE), "avs-p256", &Pin::new(PIN)).expect("list");
        let labels: Vec<_> = listed.iter().map(|k| k.label.as_str()).collect();
        assert_eq!(labels, ["k1"]);
    });
}

/// (b) Pulling the token mid-run.
///
/// What SoftHSM 2.6 does when a token's directory disappears (observed with cryptoki against
/// 2.6.1): it does not keep serving from memory. It re-reads the token directory on every object
/// access, so right away `C_SignInit` fails with `CKR_OBJECT_HANDLE_INVALID`, `C_FindObjects` finds
/// nothing, and `C_GetTokenInfo` on the slot fails with `CKR_GENERAL_ERROR` (the slot still claims
/// a token, and `C_OpenSession` still succeeds). Putting the directory back does not revive the
/// token: SoftHSM marks it invalid for good and builds its slot list only in `C_Initialize`; after
/// `C_Finalize` + `C_Initialize` it is found and signs again.
///
/// So the test copies the token's directory aside, then pulls it while 4 threads sign: it renames
/// the directory out of the token directory and deletes it there. (A plain `rm -r` in place races
/// with SoftHSM, which re-creates its empty `*.lock` files on every access, and fails with
/// "directory not empty"; the rename makes the token vanish at one instant.) Every call while it
/// is gone must fail with `HsmError::Unavailable` within [`FAST`]. Then the copy is put back (copied
/// next to the token directory and renamed in, so SoftHSM never sees half a token), and the same
/// `Pkcs11Key` must sign again within seconds without being reopened: the backend re-initialises
/// the module, at most once a second, while the token is missing.
#[test]
fn pulled_token_is_unavailable_then_recovers() {
    in_child(
        "pulled_token_is_unavailable_then_recovers",
        "avs-pull",
        |token| {
            let spec = key_spec("avs-pull", "operator");
            pkcs11::generate(&spec).expect("generate");
            let key = Pkcs11Key::open(spec).expect("open");
            let address = key.address();

            let d = digest(1);
            check(&key.sign(&d).expect("sign before"), &d, &address);

            // Pull it while 4 threads keep signing.
            let stop = std::sync::atomic::AtomicBool::new(false);
            let outcomes = Mutex::new(Vec::new());
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let (key, stop, outcomes) = (&key, &stop, &outcomes);
                    s.spawn(move || {
                        let mut n = 100_000 * (t + 1);
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            n += 1;
                            let d = digest(n);
                            let started = Instant::now();
                            let result = key.sign(&d);
                            let took = started.elapsed();
                            if let Ok(sig) = &result {
                                check(sig, &d, &address);
                            }
                            outcomes.lock().expect("lock").push((result, took));
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
                token.pull();
                std::thread::sleep(Duration::from_millis(1500));
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let outcomes = outcomes.into_inner().expect("lock");
            let failures: Vec<_> = outcomes.iter().filter(|(r, _)| r.is_err()).collect();
            assert!(!failures.is_empty(), "no call noticed the token was gone");
            for (result, took) in &failures {
                let error = result.as_ref().expect_err("failure");
                assert!(
                    matches!(error, HsmError::Unavailable { .. }),
                    "expected Unavailable, got {error:?}"
                );
                assert!(
                    *took < FAST,
                    "a call took {took:?} while the token was gone"
                );
                assert_error_redacted(error);
            }
            // Once noticed, it stays unavailable until it is back.
            let first_failure = outcomes
                .iter()
                .position(|(r, _)| r.is_err())
                .expect("a failure");
            let tail = &outcomes[first_failure..];
            let tail_failures = tail.iter().filter(|(r, _)| r.is_err()).count();
            assert!(
                tail_failures + 4 >= tail.len(),
                "signatures after the token was gone: {} of {}",
                tail.len() - tail_failures,
                tail.len()
            );
            println!(
                "token pulled: {} calls, {} failed with Unavailable, slowest failure {:?}",
                outcomes.len(),
                failures.len(),
                failures.iter().map(|(_, t)| *t).max().expect("a failure")
            );
            let started = Instant::now();
            let error = key.sign(&digest(2)).expect_err("still gone");
            assert!(matches!(error, HsmError::Unavailable { .. }), "{error:?}");
            assert!(started.elapsed() < FAST);

            // Put it back: the same key recovers.
            token.put_back();
            let started = Instant::now();
            let mut n = 0;
            let sig = loop {
                n += 1;
                let d = digest(500_000 + n);
                match key.sign(&d) {
                    Ok(sig) => {
                        check(&sig, &d, &address);
                        break sig;
                    }
                    Err(HsmError::Unavailable { .. })
                        if started.elapsed() < Duration::from_secs(10) =>
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(other) => panic!(
                        "token back, still failing after {:?}: {other:?}",
                        started.elapsed()
                    ),
                }
            };
            println!(
                "token back: signing again after {:?} ({n} attempts): {sig:?}",
                started.elapsed()
            );
            for n in 0..100 {
                let d = digest(600_000 + n);
                check(&key.sign(&d).expect("sign after recovery"), &d, &address);
            }
        },
    );
}

/// Signing rate and latency of one `Pkcs11Key` on SoftHSM from 1, 4 and 8 threads, every signature
/// checked. A short run always; the full one (4,000 signatures per thread count) for the report,
/// alone and optimised:
/// `AVSNODE_MEASURE=1 cargo test --release -p avsnode-signing --test pkcs11 -- --nocapture sign_rate`.
#[test]
fn sign_rate() {
    let total: u64 = if std::env::var("AVSNODE_MEASURE").as_deref() == Ok("1") {
        4000
    } else {
        200
    };
    in_child("sign_rate", "avs-rate", |_token| {
        let spec = key_spec("avs-rate", "operator");
        pkcs11::generate(&spec).expect("generate");
        let key = Pkcs11Key::open(spec).expect("open");
        let address = key.address();
        for threads in [1u64, 4, 8] {
            let per_thread = total / threads;
            let latencies = Mutex::new(Vec::new());
            let signed = Mutex::new(Vec::new());
            let started = Instant::now();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (key, latencies, signed) = (&key, &latencies, &signed);
                    s.spawn(move || {
                        let mut mine = Vec::with_capacity(per_thread as usize);
                        let mut signatures = Vec::with_capacity(per_thread as usize);
                        for n in 0..per_thread {
                            let d = digest(t * 1_000_000 + n);
                            let started = Instant::now();
                            signatures.push((d, key.sign(&d).expect("sign")));
                            mine.push(started.elapsed());
                        }
                        signed.lock().expect("lock").extend(signatures);
                        latencies.lock().expect("lock").extend(mine);
                    });
                }
            });
            let elapsed = started.elapsed();
            let signed = signed.into_inner().expect("lock");
            assert_eq!(signed.len() as u64, per_thread * threads);
            for (d, signature) in &signed {
                check(signature, d, &address);
            }
            let mut latencies = latencies.into_inner().expect("lock");
            latencies.sort();
            let at = |q: f64| {
                latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
            };
            println!(
                "PKCS#11 on SoftHSM, {threads} thread(s): {} signatures in {elapsed:.2?} = {:.0} signatures/s; p50 {:.2?}, p99 {:.2?}, max {:.2?}",
                latencies.len(),
                latencies.len() as f64 / elapsed.as_secs_f64(),
                at(0.50),
                at(0.99),
                latencies[latencies.len() - 1],
            );
        }
    });
    // The same loop with a local key, for comparison.
    let local = ecdsa::SecretKey::random(&mut rand::rngs::OsRng);
    let address = local.public_key().address();
    let mut latencies = Vec::new();
    let mut signed = Vec::new();
    let started = Instant::now();
    for n in 0..total {
        let d = digest(n);
        let t = Instant::now();
        signed.push((d, local.sign(&d)));
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    for (d, signature) in &signed {
        check(signature, d, &address);
    }
    latencies.sort();
    println!(
        "local key, 1 thread: {} signatures in {elapsed:.2?} = {:.0} signatures/s; p50 {:.2?}, p99 {:.2?}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    );
}
