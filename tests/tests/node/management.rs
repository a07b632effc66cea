//! The management API's authentication, over the wire against the real `avsnode run`: unsigned,
//! wrongly signed, replayed and misdirected calls are refused; an admin's are served, through
//! the library client and through `avsnode performer`. No Docker needed: the node's AVS runs the
//! example performer as a process.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use crate::common::{AVS, TestNode, avsnode_cli};
use avsnode::management::{AdminClient, methods, sign_request};
use avsnode_keystore::{Kdf, Password};
use avsnode_proto::executor::common::AuthSignature;
use avsnode_proto::executor::executor_management_service_client::ExecutorManagementServiceClient;
use avsnode_proto::executor::{
    DeployArtifactRequest, GetChallengeTokenRequest, ListPerformersRequest, RemovePerformerRequest,
};
use avsnode_signer::Scheme;
use avsnode_signer::ecdsa;
use avsnode_signing::LocalKey;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

fn ecdsa_key() -> ecdsa::SecretKey {
    match LocalKey::generate(Scheme::Ecdsa) {
        LocalKey::Ecdsa(key) => key,
        _ => unreachable!("generated an ECDSA key"),
    }
}

async fn token(client: &mut ExecutorManagementServiceClient<Channel>, node: &TestNode) -> String {
    client
        .get_challenge_token(GetChallengeTokenRequest {
            operator_address: node.fixture().operator.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .challenge_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_calls_need_a_fresh_challenge_signed_by_an_admin() {
    let admin = ecdsa_key();
    let stranger = ecdsa_key();
    let node = TestNode::builder()
        .extra_toml(&format!(
            "[management]\nlisten = \"127.0.0.1:0\"\nadmins = [\"{}\"]\n",
            admin.public_key().address()
        ))
        .start();
    let _log = node.log_on_panic();
    let url = format!("http://{}", node.management_address());
    let mut raw = ExecutorManagementServiceClient::connect(url.clone())
        .await
        .unwrap();
    let list = ListPerformersRequest {
        avs_address: String::new(),
        auth: None,
    };

    // No auth at all.
    let refused = raw.list_performers(list.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // A made-up token.
    let mut forged = list.clone();
    forged.auth = Some(sign_request(
        &admin,
        &format!("0x{}", "11".repeat(32)),
        methods::LIST,
        &list.encode_to_vec(),
    ));
    let refused = raw.list_performers(forged).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // A real token signed by a key that is not an admin.
    let mut wrong_key = list.clone();
    let t = token(&mut raw, &node).await;
    wrong_key.auth = Some(sign_request(
        &stranger,
        &t,
        methods::LIST,
        &list.encode_to_vec(),
    ));
    let refused = raw.list_performers(wrong_key).await.unwrap_err();
    // UNAUTHENTICATED, as docs/OPERATING.md says: any signature recovers to some key, so a
    // stranger's key and garbage bytes are the same failure.
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&stranger.public_key().address().to_string())
    );

    // Garbage signature bytes of the right length.
    let mut garbage = list.clone();
    let t = token(&mut raw, &node).await;
    garbage.auth = Some(AuthSignature {
        challenge_token: t,
        signature: [vec![0x5a; 64], vec![27]].concat(),
    });
    let refused = raw.list_performers(garbage).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // The admin's own signature made malleable (s → n − s, v flipped): the same signer on paper,
    // refused.
    let mut malleable = list.clone();
    let t = token(&mut raw, &node).await;
    let mut auth = sign_request(&admin, &t, methods::LIST, &list.encode_to_vec());
    auth.signature = high_s_twin(&auth.signature);
    malleable.auth = Some(auth);
    let refused = raw.list_performers(malleable).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("high s"), "{refused:?}");

    // The admin, properly: served once...
    let mut signed = list.clone();
    let t = token(&mut raw, &node).await;
    signed.auth = Some(sign_request(
        &admin,
        &t,
        methods::LIST,
        &list.encode_to_vec(),
    ));
    let performers = raw
        .list_performers(signed.clone())
        .await
        .unwrap()
        .into_inner()
        .performers;
    assert_eq!(performers.len(), 1);
    assert_eq!(performers[0].avs_address, AVS);
    assert_eq!(performers[0].status, "healthy");
    // ...and the same token again is refused (single use).
    let replay = raw.list_performers(signed).await.unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated, "{replay:?}");

    // A signature for one method does not authorise another.
    let t = token(&mut raw, &node).await;
    let remove = RemovePerformerRequest {
        performer_id: "anything".into(),
        auth: Some(sign_request(&admin, &t, methods::LIST, &[])),
    };
    let refused = raw.remove_performer(remove).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // A signature for one request does not authorise another (the AVS is swapped).
    let t = token(&mut raw, &node).await;
    let signed_for = DeployArtifactRequest {
        avs_address: "0x000000000000000000000000000000000000dead".into(),
        digest: "v1".into(),
        registry_url: "perf".into(),
        ..Default::default()
    };
    let mut tampered = signed_for.clone();
    tampered.auth = Some(sign_request(
        &admin,
        &t,
        methods::DEPLOY,
        &signed_for.encode_to_vec(),
    ));
    tampered.avs_address = AVS.into();
    let refused = raw.deploy_artifact(tampered).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Challenges are only issued for this node's operator.
    let refused = raw
        .get_challenge_token(GetChallengeTokenRequest {
            operator_address: stranger.public_key().address().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // An authenticated deploy to an AVS whose performer is a process: a clear refusal.
    let mut client = AdminClient::connect(&url, node.fixture().operator, Some(copy(&admin)))
        .await
        .unwrap();
    let refused = client.deploy(AVS, "perf", "v1", vec![]).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("docker"),
        "{}",
        refused.message()
    );
    let refused = client
        .deploy(
            "0x000000000000000000000000000000000000dead",
            "perf",
            "v1",
            vec![],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    // The command-line client, with the admin key in a keystore.
    let dir = node.fixture().dir();
    let keystore = dir.join("admin.json");
    let password_file = dir.join("admin.pass");
    LocalKey::Ecdsa(copy(&admin))
        .encrypt(&Password::new("admin-pw"), &Kdf::light())
        .unwrap()
        .write_new(&keystore)
        .unwrap();
    avsnode_keystore::write_private(&password_file, b"admin-pw\n").unwrap();
    let operator = node.fixture().operator.to_string();
    let (status, stdout, stderr) = avsnode_cli(&[
        "performer".as_ref(),
        "list".as_ref(),
        "--node".as_ref(),
        url.as_ref(),
        "--operator".as_ref(),
        operator.as_ref(),
        "--admin-key".as_ref(),
        keystore.as_ref(),
        "--password-file".as_ref(),
        password_file.as_ref(),
    ]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains(AVS) && stdout.contains("healthy"),
        "{stdout}"
    );
    assert!(!stderr.contains("admin-pw") && !stdout.contains("admin-pw"));
    let (status, _, stderr) = avsnode_cli(&[
        "performer".as_ref(),
        "list".as_ref(),
        "--node".as_ref(),
        url.as_ref(),
        "--operator".as_ref(),
        operator.as_ref(),
        "--no-auth".as_ref(),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("Unauthenticated"), "{stderr}");

    // Issue 14 §4: deploy values need not be on the command line. `--env-from-env` takes them
    // from the caller's environment, `--env-file` from a file; names must be shell identifiers.
    // Values never appear in what the command prints.
    let env_file = dir.join("deploy.env");
    let deploy = |extra: &[&str], file_text: &str| {
        std::fs::write(&env_file, file_text).unwrap();
        let output = std::process::Command::new(avsnode_tests::binary("avsnode"))
            .args([
                "performer",
                "deploy",
                "--node",
                &url,
                "--operator",
                &operator,
            ])
            .arg("--admin-key")
            .arg(&keystore)
            .arg("--password-file")
            .arg(&password_file)
            .args(["--avs", AVS, "--image", "perf:v1", "--env-file"])
            .arg(&env_file)
            .args(extra)
            .env("API_TOKEN", "token-from-the-environment")
            .env_remove("UNSET_TOKEN")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !text.contains("token-from-the-environment") && !text.contains("value-from-the-file"),
            "a value was printed: {text}"
        );
        (output.status, text)
    };
    let (status, text) = deploy(
        &["--env-from-env", "API_TOKEN"],
        "# comment\n\nFROM_FILE=value-from-the-file\n",
    );
    // Parsed and sent: the node refuses only because this AVS's performer is not docker.
    assert!(!status.success());
    assert!(
        text.contains("FailedPrecondition") && text.contains("docker"),
        "{text}"
    );
    let (status, text) = deploy(&["--env-from-env", "UNSET_TOKEN"], "");
    assert!(!status.success());
    assert!(text.contains("UNSET_TOKEN is not set"), "{text}");
    let (status, text) = deploy(&[], "OK=1\n9BAD=value-from-the-file\n");
    assert!(!status.success());
    assert!(
        text.contains("line 2") && text.contains("[A-Za-z_][A-Za-z0-9_]*"),
        "{text}"
    );
    let (status, text) = deploy(&["--env", "A-B=1"], "");
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(text.contains("[A-Za-z_][A-Za-z0-9_]*"), "{text}");
}

/// Another handle on the same key (secret keys are deliberately not `Clone`).
fn copy(key: &ecdsa::SecretKey) -> ecdsa::SecretKey {
    ecdsa::SecretKey::from_bytes(&*key.to_bytes()).unwrap()
}

/// The high-s twin of a 65-byte `r‖s‖v` secp256k1 signature: `s' = n − s`, `v` flipped. It
/// verifies for the same key (ECDSA malleability).
fn high_s_twin(signature: &[u8]) -> Vec<u8> {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ];
    let mut out = signature.to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(signature[32 + i]) - borrow;
        borrow = i16::from(d < 0);
        out[32 + i] = d.rem_euclid(256) as u8;
    }
    out[64] = if signature[64] == 27 { 28 } else { 27 };
    out
}

/// Issue 14 §2, through the real binary: management requests were read and decoded before their
/// signature could be checked (unauthenticated 4 MiB `DeployArtifact` calls at 40/s tripled
/// honest intake p99), and anyone could mint challenge tokens fast enough (≈9k/s) to evict an
/// admin's token within ~110 ms. Now a request over `management.max_message_size` (64 KiB) is
/// refused from its length prefix, one address gets 20 calls a second (bursts of 100) before its
/// request is read, and a flood of token requests replaces only the flooder's own tokens: the
/// admin's token, asked for before the flood, still authenticates after it. The honest intake's
/// latency with and without the 4 MiB flood is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_management_floods_cost_little_and_evict_no_admin_token() {
    use crate::common::flood::{
        ATTACKER, channel_from, honest_over_fresh_connections, honest_tasks,
    };
    let admin = ecdsa_key();
    let node = TestNode::builder()
        .avs(crate::common::AvsSpec::new(AVS).without_rate_limit())
        .extra_toml(&format!(
            "[management]\nlisten = \"127.0.0.1:0\"\nadmins = [\"{}\"]\n",
            admin.public_key().address()
        ))
        .start();
    let _log = node.log_on_panic();
    let management = node.management_address();
    let mut admin_client = ExecutorManagementServiceClient::connect(format!("http://{management}"))
        .await
        .unwrap();
    let admin_token = token(&mut admin_client, &node).await;

    // Token flood from another address: 2,000 requests, 32 at a time.
    let channel = channel_from(ATTACKER, management).await.unwrap();
    let operator = node.fixture().operator.to_string();
    let minted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let limited = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flooders: Vec<_> = (0..32)
        .map(|_| {
            let mut client = ExecutorManagementServiceClient::new(channel.clone());
            let operator = operator.clone();
            let (minted, limited) = (minted.clone(), limited.clone());
            tokio::spawn(async move {
                for _ in 0..2000 / 32 {
                    let asked = client
                        .get_challenge_token(GetChallengeTokenRequest {
                            operator_address: operator.clone(),
                        })
                        .await;
                    match asked {
                        Ok(_) => minted.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        Err(s) => {
                            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                            limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let (minted, limited) = (
        minted.load(std::sync::atomic::Ordering::Relaxed),
        limited.load(std::sync::atomic::Ordering::Relaxed),
    );
    eprintln!("token flood: {minted} tokens minted, {limited} requests rate-limited");
    assert!(limited > 0, "the flood was not rate-limited");
    // The admin's token survived.
    let list = ListPerformersRequest {
        avs_address: String::new(),
        auth: None,
    };
    let mut signed = list.clone();
    signed.auth = Some(sign_request(
        &admin,
        &admin_token,
        methods::LIST,
        &list.encode_to_vec(),
    ));
    admin_client.list_performers(signed).await.unwrap();

    // 4 MiB DeployArtifact calls at 40/s from the other address, while an honest aggregator
    // sends tasks over fresh connections.
    let quiet = honest_over_fresh_connections(&node, honest_tasks()).await;
    eprintln!("{}", quiet.summary("quiet"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let big = DeployArtifactRequest {
        avs_address: AVS.into(),
        digest: "v1".into(),
        registry_url: "perf".into(),
        env: vec![avsnode_proto::executor::PerformerEnv {
            name: "BIG".into(),
            value: "x".repeat(4 << 20),
            ..Default::default()
        }],
        ..Default::default()
    };
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut calls = Vec::new();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(25));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let big = big.clone();
                calls.push(tokio::spawn(async move {
                    let channel = channel_from(ATTACKER, management).await.unwrap();
                    let mut client = ExecutorManagementServiceClient::new(channel);
                    match client.deploy_artifact(big).await {
                        Ok(_) => Code::Ok,
                        Err(s) => s.code(),
                    }
                }));
            }
            let mut codes = std::collections::BTreeMap::new();
            for call in calls {
                *codes
                    .entry(format!("{:?}", call.await.unwrap()))
                    .or_insert(0u32) += 1;
            }
            codes
        }
    });
    let attacked = honest_over_fresh_connections(&node, honest_tasks()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let codes = flood.await.unwrap();
    eprintln!(
        "{}; the 4 MiB calls were answered {codes:?}; honest p99 {:.2}x the quiet value",
        attacked.summary("under 4 MiB management calls at 40/s"),
        attacked.percentile(0.99).as_secs_f64() / quiet.percentile(0.99).as_secs_f64()
    );
    assert!(!codes.contains_key("Ok"), "{codes:?}");
    assert!(
        attacked.signed_share() >= 0.95,
        "{}",
        attacked.summary("attacked")
    );
    let metrics = node.scrape_metrics().await;
    assert!(
        crate::common::sample(
            &metrics,
            "avsnode_management_calls_refused_total",
            &[("reason", "rate_limited")]
        ) > 0.0,
        "{metrics}"
    );
}
