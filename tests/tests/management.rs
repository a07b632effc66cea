//! The management API's authentication, over the wire against the real `avsnode run`: unsigned,
//! wrongly signed, replayed and misdirected calls are refused; an admin's are served, through
//! the library client and through `avsnode performer`. No Docker needed: the node's AVS runs the
//! example performer as a process.

#![allow(clippy::unwrap_used)]

mod common;

use avsnode::keys;
use avsnode::management::{AdminClient, methods, sign_request};
use avsnode::signing::LocalKey;
use avsnode_keystore::{Kdf, Password};
use avsnode_proto::executor::executor_management_service_client::ExecutorManagementServiceClient;
use avsnode_proto::executor::{
    DeployArtifactRequest, GetChallengeTokenRequest, ListPerformersRequest, RemovePerformerRequest,
};
use avsnode_signer::Scheme;
use avsnode_signer::ecdsa;
use common::{AVS, TestNode, avsnode_cli};
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
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&stranger.public_key().address().to_string())
    );

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
    assert!(
        matches!(
            refused.code(),
            Code::Unauthenticated | Code::PermissionDenied
        ),
        "{refused:?}"
    );

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
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

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
    keys::write_private(
        &keystore,
        &keys::encrypt(
            &LocalKey::Ecdsa(copy(&admin)),
            &Password::new("admin-pw"),
            &Kdf::light(),
        )
        .unwrap()
        .to_json(),
    )
    .unwrap();
    keys::write_private(&password_file, "admin-pw\n").unwrap();
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
}

/// Another handle on the same key (secret keys are deliberately not `Clone`).
fn copy(key: &ecdsa::SecretKey) -> ecdsa::SecretKey {
    ecdsa::SecretKey::from_bytes(&*key.to_bytes()).unwrap()
}
