//! `[chain]` through the real binary against the project's test chain (a real EVM with
//! stand-ins of AllocationManager, KeyRegistrar and a TaskAVSRegistrar; `avsnode_tests::chain`):
//! aggregator keys read from chain with no static key in the file, key rotation, membership
//! removed and restored, our registered key differing from the signer, the RPC down and back, a
//! second endpoint taking over, a reorg, and a steady state that makes no RPC call at all.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use avsnode_aggregator::{Aggregator, NewTask};
use avsnode_signer::Scheme;
use avsnode_signer::messages::Address;
use avsnode_signing::LocalKey;
use avsnode_tests::chain::{TestChain, chain_available};
use serde_json::json;

use crate::common::{AVS, Fixture, Link, TestNode, address};

/// The AVS's aggregator operator set on chain.
const AGGREGATOR_SET: u32 = 100;
/// KeyRegistrar's curve types.
pub(crate) const ECDSA: u8 = 1;
pub(crate) const BN254: u8 = 2;

/// The chain as the AVS and this operator left it: a registrar naming set 100 as the
/// aggregators' and 0, 1, 2 as executor sets; the fixture's ECDSA aggregator registered in 100;
/// this operator a member of 0, 1, 2 with its keys registered in 0 (ECDSA) and 1 (BN254; the
/// node compares the G2 key it signs with, so G1 is left zero). Set 2 (BLS12-381) has no curve
/// in KeyRegistrar: membership only.
pub(crate) async fn prepared_chain(fixture: &Fixture) -> TestChain {
    let chain = TestChain::start();
    configure_avs(
        &chain,
        AVS,
        &[(0, Some(ECDSA)), (1, Some(BN254)), (2, None)],
    )
    .await;
    register_aggregator(&chain, fixture.aggregator(Scheme::Ecdsa)).await;
    let ours = fixture.set(Scheme::Ecdsa).public.clone();
    let avsnode_aggregator::OperatorKey::Ecdsa {
        address: signer, ..
    } = ours
    else {
        unreachable!("set 0 is ECDSA")
    };
    register(&chain, AVS, 0, fixture.operator, &signer.0).await;
    let avsnode_aggregator::OperatorKey::Bn254(g2) = &fixture.set(Scheme::Bn254).public else {
        unreachable!("set 1 is BN254")
    };
    register(&chain, AVS, 1, fixture.operator, &bn254_key(&g2.to_wire())).await;
    for set in 0..3 {
        add_to_set(&chain, AVS, set, fixture.operator).await;
    }
    chain
}

/// Makes `avs` a task AVS: a registrar naming set 100 (ECDSA) as its aggregators' and `sets` as
/// its executor sets, each configured with its KeyRegistrar curve type (`None`: no curve).
pub(crate) async fn configure_avs(chain: &TestChain, avs: &str, sets: &[(u32, Option<u8>)]) {
    let registrar = chain.rpc("test_setAvsRegistrar", json!([avs])).await["registrar"]
        .as_str()
        .unwrap()
        .to_owned();
    let executor_sets: Vec<u32> = sets.iter().map(|(id, _)| *id).collect();
    chain
        .transact(
            "test_setAvsConfig",
            json!([registrar, AGGREGATOR_SET, executor_sets]),
        )
        .await;
    let curves = sets.iter().filter_map(|(id, curve)| Some((*id, (*curve)?)));
    for (set, curve) in std::iter::once((AGGREGATOR_SET, ECDSA)).chain(curves) {
        chain
            .transact("test_configureOperatorSet", json!([avs, set, curve]))
            .await;
    }
}

/// What KeyRegistrar holds for a BN254 key: G1 (left zero: the node compares the G2 key it
/// signs with) and the G2 key in EVM wire form.
pub(crate) fn bn254_key(g2_wire: &[u8]) -> Vec<u8> {
    let mut key = vec![0u8; 64];
    key.extend_from_slice(g2_wire);
    key
}

/// Registers `key` for `operator` in set `set` of `avs` (an ECDSA key is its 20-byte address);
/// the block.
pub(crate) async fn register(
    chain: &TestChain,
    avs: &str,
    set: u32,
    operator: Address,
    key: &[u8],
) -> u64 {
    chain
        .transact(
            "test_registerKey",
            json!([
                avs,
                set,
                operator.to_string(),
                format!("0x{}", hex::encode(key))
            ]),
        )
        .await
}

/// Adds `operator` to set `set` of `avs`; the block.
pub(crate) async fn add_to_set(chain: &TestChain, avs: &str, set: u32, operator: Address) -> u64 {
    chain
        .transact(
            "test_addToOperatorSet",
            json!([operator.to_string(), avs, set]),
        )
        .await
}

/// Registers an ECDSA aggregator's signing address as its key in the aggregator set.
async fn register_aggregator(chain: &TestChain, aggregator: &Aggregator) -> u64 {
    let LocalKey::Ecdsa(k) = aggregator.key() else {
        unreachable!("an ECDSA aggregator")
    };
    register(
        chain,
        AVS,
        AGGREGATOR_SET,
        aggregator.address,
        &k.public_key().address().0,
    )
    .await
}

/// `[chain]` for `urls`, following closely (no distance, 100 ms polls) and serving cached facts
/// for 2 s without an answer.
fn chain_toml(chain: &TestChain, urls: &[String]) -> String {
    format!(
        "[chain]\nrpc_urls = {urls:?}\nchain_id = {}\nallocation_manager = \"{}\"\n\
         key_registrar = \"{}\"\nfollow_distance = 0\npoll_interval = \"100ms\"\n\
         serve_cached_for = \"2s\"\nrequest_timeout = \"500ms\"\n",
        chain.chain_id, chain.allocation_manager, chain.key_registrar
    )
}

pub(crate) fn start_node(fixture: &Arc<Fixture>, chain: &TestChain, urls: &[String]) -> TestNode {
    TestNode::builder()
        .fixture(fixture.clone())
        .aggregators_from_chain()
        .extra_toml(&chain_toml(chain, urls))
        .start()
}

/// A task for set `set` at `block`.
pub(crate) fn task_at(fixture: &Fixture, scheme: Scheme, block: u64) -> NewTask {
    let mut task = fixture.task(AVS, scheme, b"chain");
    task.task_block_number = block;
    task
}

/// Submits until `accept` says the answer is the one expected (the follower applies events
/// within a few polls), at most 10 s; the last answer.
async fn eventually(
    node: &TestNode,
    mut make: impl FnMut() -> avsnode_proto::executor::TaskSubmission,
    accept: impl Fn(&Result<avsnode_proto::executor::TaskResult, tonic::Status>) -> bool,
) -> Result<avsnode_proto::executor::TaskResult, tonic::Status> {
    let started = Instant::now();
    loop {
        let answer = node.submit(make()).await;
        if accept(&answer) || started.elapsed() > Duration::from_secs(10) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tasks signed by the aggregator key registered on chain are accepted with no static key in
/// the file; a forged one is refused without any RPC call; in steady state, tasks (at the same
/// and at later blocks) make no `eth_call` at all.
#[tokio::test(flavor = "multi_thread")]
async fn aggregator_keys_come_from_chain_and_the_steady_state_makes_no_rpc_call() {
    if !chain_available() {
        return;
    }
    let fixture = Fixture::new();
    let chain = prepared_chain(&fixture).await;
    let node = start_node(&fixture, &chain, std::slice::from_ref(&chain.url));
    let _log = node.log_on_panic();
    assert!(
        !std::fs::read_to_string(node.config())
            .unwrap()
            .contains("public_key")
    );

    // Cold: what the first task reads (start-up read our own standing already).
    chain.reset_counts().await;
    let head = chain.head().await;
    let task = task_at(&fixture, Scheme::Ecdsa, head);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    fixture.assert_verifies(&result, &task);
    let cold = chain.counts().await;
    eprintln!("RPC calls of the first task (cold): {cold}");
    assert!(cold["eth_call"].as_u64().unwrap_or(0) >= 1, "{cold}");

    // Warm: many tasks, at this block and at later ones; every scheme's operator set.
    chain.reset_counts().await;
    for round in 0..3 {
        for scheme in [Scheme::Ecdsa, Scheme::Bn254, Scheme::Bls12381] {
            for _ in 0..5 {
                let task = task_at(&fixture, scheme, chain.head().await);
                let result = node
                    .submit(fixture.sign(Scheme::Ecdsa, &task))
                    .await
                    .unwrap_or_else(|e| panic!("round {round} {scheme}: {e:?}"));
                fixture.assert_verifies(&result, &task);
            }
        }
        chain.transact("test_mine", json!([2])).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(chain.eth_calls().await, 0, "{}", chain.counts().await);

    // A forgery naming the registered aggregator: refused, and no RPC call made for it.
    let forger = Aggregator::new(
        fixture.aggregator(Scheme::Ecdsa).address,
        LocalKey::generate(Scheme::Ecdsa),
    );
    let task = task_at(&fixture, Scheme::Ecdsa, chain.head().await);
    let refused = node.submit(forger.sign(&task)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("does not verify"), "{refused:?}");
    assert_eq!(chain.eth_calls().await, 0, "{}", chain.counts().await);

    // An aggregator the chain does not know.
    let stranger = Aggregator::new(
        address("0x00000000000000000000000000000000000bad01"),
        LocalKey::generate(Scheme::Ecdsa),
    );
    let refused = node.submit(stranger.sign(&task)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("not allowed"), "{refused:?}");

    // What a cold miss adds (printed for docs/PERFORMANCE.md): aggregators registered now, each
    // one's first task reads its key; then warm tasks.
    let newcomers: Vec<Aggregator> = (0..15u8)
        .map(|i| {
            let mut a = [0x5e; 20];
            a[19] = i;
            Aggregator::new(Address(a), LocalKey::generate(Scheme::Ecdsa))
        })
        .collect();
    for a in &newcomers {
        register_aggregator(&chain, a).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let block = chain.head().await;
    let timed = || {
        let (node, fixture) = (&node, &fixture);
        let newcomers = &newcomers;
        async move {
            let mut times = Vec::new();
            for a in newcomers {
                let task = task_at(fixture, Scheme::Ecdsa, block);
                let sent = Instant::now();
                node.submit(a.sign(&task)).await.unwrap();
                times.push(sent.elapsed());
            }
            times.sort();
            times[times.len() / 2]
        }
    };
    chain.reset_counts().await;
    let cold = timed().await;
    let cold_calls = chain.eth_calls().await;
    let warm = timed().await;
    eprintln!(
        "p50 of a task whose aggregator key is read (cold): {cold:?} ({cold_calls} eth_call for {} tasks); warm: {warm:?}",
        newcomers.len()
    );
    assert_eq!(cold_calls, newcomers.len() as u64, "one read per new key");

    let metrics = node.scrape_metrics().await;
    assert!(
        metrics.contains("avsnode_chain_cache_total{fact=\"key\",result=\"hit\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("avsnode_chain_up 1"), "{metrics}");
}

/// The AVS rotates its aggregator's key on chain: within the follower's lag the node accepts
/// the new key and refuses the old one at later blocks, while tasks at blocks before the
/// rotation still verify against the old key.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotated_on_chain_is_followed_and_older_blocks_keep_the_old_key() {
    if !chain_available() {
        return;
    }
    let fixture = Fixture::new();
    let chain = prepared_chain(&fixture).await;
    let node = start_node(&fixture, &chain, std::slice::from_ref(&chain.url));
    let _log = node.log_on_panic();
    let old = fixture.aggregator(Scheme::Ecdsa);
    let before = chain.head().await;
    let task = task_at(&fixture, Scheme::Ecdsa, before);
    fixture.assert_verifies(&node.submit(old.sign(&task)).await.unwrap(), &task);

    let new = Aggregator::new(old.address, LocalKey::generate(Scheme::Ecdsa));
    chain
        .transact(
            "test_deregisterKey",
            json!([AVS, AGGREGATOR_SET, old.address.to_string()]),
        )
        .await;
    let rotated = register_aggregator(&chain, &new).await;

    let after = eventually(
        &node,
        || new.sign(&task_at(&fixture, Scheme::Ecdsa, rotated)),
        Result::is_ok,
    )
    .await;
    assert!(after.is_ok(), "the new key at block {rotated}: {after:?}");
    let refused = node
        .submit(old.sign(&task_at(&fixture, Scheme::Ecdsa, rotated)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // Before the rotation the old key is the one.
    let task = task_at(&fixture, Scheme::Ecdsa, before);
    fixture.assert_verifies(&node.submit(old.sign(&task)).await.unwrap(), &task);
    let refused = node.submit(new.sign(&task)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}

/// This operator removed from its operator set: FAILED_PRECONDITION and nothing signed; added
/// back: signed again.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_removed_from_the_set_is_refused_until_added_back() {
    if !chain_available() {
        return;
    }
    let fixture = Fixture::new();
    let chain = prepared_chain(&fixture).await;
    let node = start_node(&fixture, &chain, std::slice::from_ref(&chain.url));
    let _log = node.log_on_panic();
    let operator = fixture.operator.to_string();
    let removed = chain
        .transact("test_removeFromOperatorSet", json!([operator, AVS, 0]))
        .await;
    let answer = eventually(
        &node,
        || fixture.sign(Scheme::Ecdsa, &task_at(&fixture, Scheme::Ecdsa, removed)),
        Result::is_err,
    )
    .await;
    let refused = answer.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("not a member"), "{refused:?}");
    // The other sets are untouched.
    let task = task_at(&fixture, Scheme::Bn254, removed);
    fixture.assert_verifies(
        &node
            .submit(fixture.sign(Scheme::Ecdsa, &task))
            .await
            .unwrap(),
        &task,
    );
    let metrics = node.scrape_metrics().await;
    assert!(metrics.contains("reason=\"chain_not_member\""), "{metrics}");

    let added = chain
        .transact("test_addToOperatorSet", json!([operator, AVS, 0]))
        .await;
    let answer = eventually(
        &node,
        || fixture.sign(Scheme::Ecdsa, &task_at(&fixture, Scheme::Ecdsa, added)),
        Result::is_ok,
    )
    .await;
    let task = task_at(&fixture, Scheme::Ecdsa, added);
    assert!(answer.is_ok(), "{answer:?}");
    fixture.assert_verifies(
        &node
            .submit(fixture.sign(Scheme::Ecdsa, &task))
            .await
            .unwrap(),
        &task,
    );
}

/// Another key registered for this operator than its signer's: `/readyz` names the set, and
/// its tasks are refused; the other sets serve.
#[tokio::test(flavor = "multi_thread")]
async fn a_registered_key_other_than_the_signer_is_reported_and_refused() {
    if !chain_available() {
        return;
    }
    let fixture = Fixture::new();
    let chain = prepared_chain(&fixture).await;
    let stranger = [0x77u8; 20];
    chain
        .transact(
            "test_deregisterKey",
            json!([AVS, 0, fixture.operator.to_string()]),
        )
        .await;
    register(&chain, AVS, 0, fixture.operator, &stranger).await;
    let node = start_node(&fixture, &chain, std::slice::from_ref(&chain.url));
    let _log = node.log_on_panic();
    assert!(
        node.log().contains("chain disagrees"),
        "start-up names the disagreement"
    );
    let (ready, body) = node.readyz().await;
    assert!(!ready, "{body}");
    assert!(
        body.contains("chain disagrees") && body.contains(&Address(stranger).to_string()),
        "{body}"
    );
    let head = chain.head().await;
    let refused = node
        .submit(fixture.sign(Scheme::Ecdsa, &task_at(&fixture, Scheme::Ecdsa, head)))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("registered on chain"),
        "{refused:?}"
    );
    let task = task_at(&fixture, Scheme::Bn254, head);
    fixture.assert_verifies(
        &node
            .submit(fixture.sign(Scheme::Ecdsa, &task))
            .await
            .unwrap(),
        &task,
    );
}

/// The RPC behind two endpoints: the second takes over when the first is cut; with both cut,
/// cached facts serve for `serve_cached_for`, then chain-checked tasks are UNAVAILABLE and
/// `/readyz` says why; healed, the node recovers without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn the_rpc_down_serves_cached_facts_then_unavailable_and_recovers() {
    if !chain_available() {
        return;
    }
    let fixture = Fixture::new();
    let chain = prepared_chain(&fixture).await;
    let (first, second) = (
        Link::start(chain.port()).await,
        Link::start(chain.port()).await,
    );
    let urls = [first.port, second.port].map(|p| format!("http://127.0.0.1:{p}"));
    let node = start_node(&fixture, &chain, &urls);
    let _log = node.log_on_panic();
    let block = chain.head().await;
    let task = task_at(&fixture, Scheme::Ecdsa, block);
    fixture.assert_verifies(
        &node
            .submit(fixture.sign(Scheme::Ecdsa, &task))
            .await
            .unwrap(),
        &task,
    );

    // The first endpoint cut: a fact never read before (a new aggregator) is read through the
    // second.
    first.cut();
    let other = Aggregator::new(
        address("0x00000000000000000000000000000000000a6602"),
        LocalKey::generate(Scheme::Ecdsa),
    );
    let registered = register_aggregator(&chain, &other).await;
    let answer = eventually(
        &node,
        || other.sign(&task_at(&fixture, Scheme::Ecdsa, registered)),
        Result::is_ok,
    )
    .await;
    assert!(answer.is_ok(), "through the second endpoint: {answer:?}");

    // Both cut: cached facts serve at first...
    second.cut();
    let cut_at = Instant::now();
    let task = task_at(&fixture, Scheme::Ecdsa, registered);
    let served = node.submit(other.sign(&task)).await;
    fixture.assert_verifies(&served.unwrap(), &task);
    // ...then not.
    let answer = eventually(
        &node,
        || other.sign(&task_at(&fixture, Scheme::Ecdsa, registered)),
        |a| {
            a.as_ref()
                .is_err_and(|e| e.code() == tonic::Code::Unavailable)
        },
    )
    .await;
    let refused = answer.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("chain"), "{refused:?}");
    // The window runs from the follower's last successful round, shortly before the cut.
    assert!(
        cut_at.elapsed() >= Duration::from_secs(1)
            && refused.message().contains("cached facts serve for 2 s"),
        "served cached facts for the window, then: {refused:?} after {:?}",
        cut_at.elapsed()
    );
    let (ready, body) = node.readyz().await;
    assert!(!ready && body.contains("chain unavailable"), "{body}");
    // The gauge is refreshed each second.
    let started = Instant::now();
    let mut metrics = node.scrape_metrics().await;
    while !metrics.contains("avsnode_chain_up 0") && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = node.scrape_metrics().await;
    }
    assert!(metrics.contains("avsnode_chain_up 0"), "{metrics}");

    // Healed: no restart needed.
    first.heal();
    second.heal();
    let answer = eventually(
        &node,
        || other.sign(&task_at(&fixture, Scheme::Ecdsa, registered)),
        Result::is_ok,
    )
    .await;
    assert!(answer.is_ok(), "after the RPC is back: {answer:?}");
    let started = Instant::now();
    while !node.readyz().await.0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ready, body) = node.readyz().await;
    assert!(ready, "{body}");
}

/// A reorg that removes a key registration: the node forgets the key it had read at the
/// orphaned blocks.
#[tokio::test(flavor = "multi_thread")]
async fn a_reorg_removing_a_key_registration_is_forgotten() {
    if !chain_available() {
        return;
    }
    let fixture = Fixture::new();
    let chain = prepared_chain(&fixture).await;
    let node = start_node(&fixture, &chain, std::slice::from_ref(&chain.url));
    let _log = node.log_on_panic();
    let snapshot = chain.rpc("evm_snapshot", json!([])).await;
    let other = Aggregator::new(
        address("0x00000000000000000000000000000000000a6603"),
        LocalKey::generate(Scheme::Ecdsa),
    );
    let registered = register_aggregator(&chain, &other).await;
    let task = task_at(&fixture, Scheme::Ecdsa, registered);
    fixture.assert_verifies(&node.submit(other.sign(&task)).await.unwrap(), &task);

    assert_eq!(
        chain.rpc("evm_revert", json!([snapshot])).await,
        json!(true)
    );
    chain.transact("test_mine", json!([3])).await;
    let answer = eventually(
        &node,
        || other.sign(&task_at(&fixture, Scheme::Ecdsa, registered)),
        Result::is_err,
    )
    .await;
    let refused = answer.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("not allowed"), "{refused:?}");
    let metrics = node.scrape_metrics().await;
    assert!(
        !metrics.contains("avsnode_chain_reorgs_total 0"),
        "{metrics}"
    );
}

/// An endpoint serving another chain: the node refuses to start and says which ids.
#[tokio::test(flavor = "multi_thread")]
async fn an_rpc_of_another_chain_stops_the_node_at_start() {
    if !chain_available() {
        return;
    }
    let fixture = Fixture::new();
    let chain = TestChain::start();
    let toml = chain_toml(&chain, std::slice::from_ref(&chain.url))
        .replace(&format!("chain_id = {}", chain.chain_id), "chain_id = 1");
    let (status, log) = TestNode::builder()
        .fixture(fixture)
        .aggregators_from_chain()
        .extra_toml(&toml)
        .run_to_exit();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("chain id {}", chain.chain_id)) && log.contains("chain_id 1"),
        "{log}"
    );
}

/// `avsnode check-config` with `[chain]`: an ECDSA set's verifier version read from chain and
/// its domain checked against `domainSeparator()`; each set's standing printed; a wrong version
/// and a set the chain disagrees with fail the check.
#[tokio::test(flavor = "multi_thread")]
async fn check_config_reads_the_verifier_and_reports_each_set() {
    if !chain_available() {
        return;
    }
    let fixture = Fixture::new();
    let chain = prepared_chain(&fixture).await;
    let mut builder = TestNode::builder()
        .fixture(fixture.clone())
        .aggregators_from_chain()
        .extra_toml(&chain_toml(&chain, std::slice::from_ref(&chain.url)));
    let path = builder.write_config();
    let written = std::fs::read_to_string(&path).unwrap();
    let from_chain = written.replace(
        &format!(
            "verifier = \"{}\", verifier_version = \"1\"",
            crate::common::VERIFIER
        ),
        &format!("verifier = \"{}\"", chain.ecdsa_verifier),
    );
    assert_ne!(from_chain, written);
    std::fs::write(&path, &from_chain).unwrap();
    let (status, out, err) =
        crate::common::avsnode_cli(&["check-config".as_ref(), path.as_os_str()]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("chain id") && out.contains("member yes"),
        "{out}"
    );

    let wrong = from_chain.replace(
        &format!("verifier = \"{}\"", chain.ecdsa_verifier),
        &format!(
            "verifier = \"{}\", verifier_version = \"2.0.0\"",
            chain.ecdsa_verifier
        ),
    );
    std::fs::write(&path, wrong).unwrap();
    let (status, out, err) =
        crate::common::avsnode_cli(&["check-config".as_ref(), path.as_os_str()]);
    assert!(!status.success(), "{out}{err}");
    assert!(out.contains("domainSeparator()"), "{out}{err}");

    std::fs::write(&path, &from_chain).unwrap();
    chain
        .transact(
            "test_removeFromOperatorSet",
            json!([fixture.operator.to_string(), AVS, 1]),
        )
        .await;
    let (status, out, err) =
        crate::common::avsnode_cli(&["check-config".as_ref(), path.as_os_str()]);
    assert!(!status.success(), "{out}{err}");
    assert!(
        out.contains("operator_sets[1]") && out.contains("not a member"),
        "{out}{err}"
    );
}
