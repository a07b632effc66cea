//! Task intake: protobuf bytes → `TaskSubmission` (unary `SubmitTask`) and `StreamRequest`
//! (`TaskStream`), then the node's step-1 shape check, the task hash, the aggregator signature
//! check against one key of each scheme, and the deadline and freshness checks — the signed
//! `deadline_unix_ms` and a `grpc-timeout` header (taken from the input's payload) through to the
//! deadline instant, where `u64::MAX` once overflowed.
//!
//! Invariants: nothing panics; prost re-encoding is lossless; a rejected shape is
//! INVALID_ARGUMENT; an accepted task echoes its wire fields, and its canonical re-encoding
//! shapes to the same task and hash; a signature that verifies is bound to the operator and to
//! every signed field (changing one makes it fail).
#![no_main]

use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use avsnode::config::{AvsConfig, Config};
use avsnode_signing::LocalKey;
use avsnode::pipeline::validate::{self, Task};
use avsnode_signer::VerifyingKey;
use avsnode_proto::executor::TaskSubmission;
use avsnode_proto::stream::StreamRequest;
use avsnode_proto::stream::stream_request::Kind;
use avsnode_signer::Scheme;
use avsnode_signer::messages::Address;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The operator of the example config, which the seed tasks are signed for.
const OPERATOR: Address = Address([0x11; 20]);
/// The aggregator keys the seeds are signed with (the same secrets as `examples/gen_seeds.rs`).
const AGGREGATOR_SECRETS: [(Scheme, [u8; 32]); 3] = [
    (Scheme::Ecdsa, [0x21; 32]),
    (Scheme::Bn254, [0x22; 32]),
    (Scheme::Bls12381, [0x23; 32]),
];

static KEYS: LazyLock<Vec<VerifyingKey>> = LazyLock::new(|| {
    AGGREGATOR_SECRETS
        .iter()
        .map(|(scheme, secret)| {
            match LocalKey::from_secret(*scheme, secret).expect("fixed valid secret") {
                LocalKey::Ecdsa(k) => VerifyingKey::Ecdsa(k.public_key().address()),
                LocalKey::Bn254(k) => VerifyingKey::bn254(k.public_key_g2()),
                LocalKey::Bls12381(k) => VerifyingKey::Bls12381(k.public_key()),
            }
        })
        .collect()
});

/// The first AVS of the example config: real limits for the deadline and freshness checks.
static AVS: LazyLock<AvsConfig> = LazyLock::new(|| {
    let config = Config::from_toml(
        include_str!("../../deploy/avsnode.example.toml"),
        Path::new("/etc/avsnode/avsnode.toml"),
        |_| None,
    )
    .expect("deploy/avsnode.example.toml is a valid config");
    config.avs[0].clone()
});

fuzz_target!(|data: &[u8]| {
    if let Ok(sub) = TaskSubmission::decode(data) {
        let again = TaskSubmission::decode(&sub.encode_to_vec()[..]).expect("re-encoded message");
        assert_eq!(again, sub, "prost re-encoding changed the submission");
        check(sub);
    }
    if let Ok(req) = StreamRequest::decode(data) {
        let again = StreamRequest::decode(&req.encode_to_vec()[..]).expect("re-encoded message");
        assert_eq!(again, req, "prost re-encoding changed the stream request");
        if let Some(Kind::Task(sub)) = req.kind {
            check(sub);
        }
    }
});

fn check(sub: TaskSubmission) {
    let wire = sub.clone();
    let task = match validate::shape(sub) {
        Ok(task) => task,
        Err(rejection) => {
            // tonic's `Code` by name: the fuzz crate does not depend on tonic itself.
            assert_eq!(format!("{:?}", rejection.code()), "InvalidArgument");
            assert!(!rejection.is_failure());
            assert!(matches!(
                rejection.reason(),
                "malformed" | "unsupported_version"
            ));
            let _ = rejection.to_status();
            return;
        }
    };

    // The task echoes what came in.
    assert_eq!(task.task_id_wire, wire.task_id);
    assert!(
        task.task_id
            .to_wire_string()
            .eq_ignore_ascii_case(&wire.task_id)
    );
    assert!(
        task.aggregator
            .to_string()
            .eq_ignore_ascii_case(&wire.aggregator_address)
    );
    assert!(task.avs.to_string().eq_ignore_ascii_case(&wire.avs_address));
    assert!(
        task.executor
            .to_string()
            .eq_ignore_ascii_case(&wire.executor_address)
    );
    assert_eq!(task.payload, wire.payload);
    assert_eq!(task.signature, wire.signature);
    assert!(!task.signature.is_empty());
    assert_ne!(task.reference_timestamp, 0);
    match task.version {
        1 => assert_eq!(task.deadline_unix_ms, None),
        1001 => assert_eq!(task.deadline_unix_ms, Some(wire.deadline_unix_ms)),
        v => panic!("shape accepted version {v}"),
    }

    // The canonical re-encoding (lower-case hex, no stray deadline) shapes to the same task.
    let bytes = canonical(&task).encode_to_vec();
    let decoded = TaskSubmission::decode(&bytes[..]).expect("canonical submission decodes");
    let again = validate::shape(decoded).expect("canonical submission passes shape");
    assert_same(&task, &again);
    assert_eq!(
        canonical(&again).encode_to_vec(),
        bytes,
        "canonical form is a fixed point"
    );

    let h = validate::task_hash(&task, OPERATOR);
    assert_eq!(validate::task_hash(&again, OPERATOR), h);
    let other_operator = Address([0x12; 20]);
    assert_ne!(
        validate::task_hash(&task, other_operator),
        h,
        "hash binds the operator"
    );

    for key in KEYS.iter() {
        if !key.verify(&h, &task.signature) {
            continue;
        }
        // A signature that verifies is bound to our operator and to every signed field.
        let sig = &task.signature;
        assert!(!key.verify(&validate::task_hash(&task, other_operator), sig));
        for changed in altered(&task) {
            assert!(
                !key.verify(&validate::task_hash(&changed, OPERATOR), sig),
                "signature still verifies after changing a signed field: {key:?}"
            );
        }
    }

    // The clock-dependent checks must not panic on any value: the signed deadline, a gRPC
    // timeout from the block number, and one parsed from the payload as a header would be.
    let avs = &*AVS;
    let now = Instant::now();
    for grpc in [
        None,
        Some(Duration::from_millis(task.task_block_number)),
        Some(Duration::from_secs(task.task_block_number)),
        validate::grpc_timeout(&task.payload).ok(),
    ] {
        if let Ok(left) = validate::time_left(&task, grpc, avs) {
            assert!(left <= validate::MAX_TASK_TIME);
            let deadline = validate::deadline(&task, grpc, avs, now).expect("in range");
            assert!(deadline >= now);
        }
    }
    if let Err(rejection) = validate::grpc_timeout(&task.payload) {
        assert_eq!(format!("{:?}", rejection.code()), "InvalidArgument");
    }
    let _ = validate::freshness(&task, avs);
}

fn canonical(task: &Task) -> TaskSubmission {
    TaskSubmission {
        task_id: task.task_id.to_wire_string(),
        aggregator_address: task.aggregator.to_string(),
        avs_address: task.avs.to_string(),
        payload: task.payload.clone(),
        signature: task.signature.clone(),
        operator_set_id: task.operator_set_id,
        reference_timestamp: task.reference_timestamp,
        executor_address: task.executor.to_string(),
        task_block_number: task.task_block_number,
        version: task.version,
        deadline_unix_ms: task.deadline_unix_ms.unwrap_or(0),
    }
}

fn assert_same(a: &Task, b: &Task) {
    assert_eq!(a.task_id, b.task_id);
    assert_eq!(a.aggregator, b.aggregator);
    assert_eq!(a.avs, b.avs);
    assert_eq!(a.executor, b.executor);
    assert_eq!(a.operator_set_id, b.operator_set_id);
    assert_eq!(a.reference_timestamp, b.reference_timestamp);
    assert_eq!(a.task_block_number, b.task_block_number);
    assert_eq!(a.version, b.version);
    assert_eq!(a.deadline_unix_ms, b.deadline_unix_ms);
    assert_eq!(a.payload, b.payload);
    assert_eq!(a.signature, b.signature);
}

/// The task with one signed field changed, for each signed field.
fn altered(task: &Task) -> Vec<Task> {
    let mut out = Vec::new();
    let mut push = |f: &dyn Fn(&mut Task)| {
        let mut t = task.clone();
        f(&mut t);
        out.push(t);
    };
    push(&|t| t.task_id.0[31] ^= 1);
    push(&|t| t.avs.0[19] ^= 1);
    push(&|t| t.operator_set_id ^= 1);
    push(&|t| t.reference_timestamp ^= 1);
    push(&|t| t.task_block_number ^= 1);
    push(&|t| t.payload.push(0));
    push(&|t| {
        t.deadline_unix_ms = match t.deadline_unix_ms {
            Some(d) => Some(d ^ 1),
            None => Some(1),
        }
    });
    out
}
