//! Wire compatibility with the Hourglass executor: the bytes an aggregator sends and the method
//! paths it calls must be exactly those of DESIGN §2.1.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::{Arc, Mutex};

use avsnode_proto::executor::TaskSubmission;
use avsnode_proto::executor::executor_service_client::ExecutorServiceClient;
use avsnode_proto::performer::TaskRequest;
use avsnode_proto::performer::performer_service_client::PerformerServiceClient;
use prost::Message;

const TASK_ID: &str = "0xabababababababababababababababababababababababababababababababab";
const AGGREGATOR: &str = "0x1111111111111111111111111111111111111111";
const AVS: &str = "0x2222222222222222222222222222222222222222";
const EXECUTOR: &str = "0x3333333333333333333333333333333333333333";

fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    // Every length-delimited field here is shorter than 128 bytes: a one-byte length.
    assert!(bytes.len() < 128);
    let mut out = vec![tag, bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

#[test]
fn task_submission_encodes_byte_for_byte() {
    let submission = TaskSubmission {
        task_id: TASK_ID.into(),
        aggregator_address: AGGREGATOR.into(),
        avs_address: AVS.into(),
        payload: b"payload".to_vec(),
        signature: vec![0x5a; 65],
        operator_set_id: 300,
        reference_timestamp: 1_700_000_000,
        executor_address: EXECUTOR.into(),
        task_block_number: (1 << 35) + 1,
        version: 1001,
        deadline_unix_ms: 1_700_000_123_456,
    };

    // Tags are (field number << 3) | wire type; 2 = length-delimited, 0 = varint.
    let mut expected = Vec::new();
    expected.extend(field(0x0a, TASK_ID.as_bytes())); // 1 task_id
    expected.extend(field(0x12, AGGREGATOR.as_bytes())); // 2 aggregator_address
    expected.extend(field(0x1a, AVS.as_bytes())); // 3 avs_address
    expected.extend(field(0x22, b"payload")); // 4 payload
    expected.extend(field(0x2a, &[0x5a; 65])); // 5 signature
    expected.extend([0x30, 0xac, 0x02]); // 6 operator_set_id = 300
    expected.extend([0x38, 0x80, 0xe2, 0xcf, 0xaa, 0x06]); // 7 reference_timestamp
    expected.extend(field(0x42, EXECUTOR.as_bytes())); // 8 executor_address
    expected.extend([0x48, 0x81, 0x80, 0x80, 0x80, 0x80, 0x01]); // 9 task_block_number = 2^35+1
    expected.extend([0x50, 0xe9, 0x07]); // 10 version = 1001
    // 1001 deadline_unix_ms: tag (1001 << 3) | 0 = 8008, a two-byte varint.
    expected.extend([0xc8, 0x3e, 0xc0, 0x94, 0x9d, 0xff, 0xbc, 0x31]);

    assert_eq!(hex(&submission.encode_to_vec()), hex(&expected));
    assert_eq!(
        TaskSubmission::decode(expected.as_slice()).unwrap(),
        submission
    );
}

#[test]
fn hourglass_task_without_deadline_omits_field_1001() {
    // Proto3 omits default values: a version-1 Hourglass task carries no field 1001 at all.
    let submission = TaskSubmission {
        task_id: TASK_ID.into(),
        version: 1,
        ..Default::default()
    };
    let mut expected = field(0x0a, TASK_ID.as_bytes());
    expected.extend([0x50, 0x01]);
    assert_eq!(submission.encode_to_vec(), expected);
}

#[test]
fn task_request_carries_the_ascii_task_id() {
    let request = TaskRequest {
        task_id: TASK_ID.as_bytes().to_vec(),
        payload: vec![1, 2, 3],
    };
    let mut expected = field(0x0a, TASK_ID.as_bytes());
    expected.extend(field(0x12, &[1, 2, 3]));
    assert_eq!(request.encode_to_vec(), expected);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A transport that records the request path and fails the call.
fn capturing_transport(
    paths: Arc<Mutex<Vec<String>>>,
) -> impl tonic::client::GrpcService<
    tonic::body::Body,
    ResponseBody = tonic::body::Body,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        paths.lock().unwrap().push(request.uri().path().to_owned());
        async { Err::<http::Response<tonic::body::Body>, _>(std::io::Error::other("captured")) }
    })
}

#[tokio::test]
async fn method_paths_are_hourglass_paths() {
    let paths = Arc::new(Mutex::new(Vec::new()));

    let mut executor = ExecutorServiceClient::new(capturing_transport(paths.clone()));
    assert!(
        executor
            .submit_task(TaskSubmission::default())
            .await
            .is_err()
    );
    let mut performer = PerformerServiceClient::new(capturing_transport(paths.clone()));
    assert!(
        performer
            .execute_task(TaskRequest::default())
            .await
            .is_err()
    );

    assert_eq!(
        *paths.lock().unwrap(),
        [
            "/eigenlayer.hourglass.v1.ExecutorService/SubmitTask",
            "/eigenlayer.hourglass.v1.performer.PerformerService/ExecuteTask",
        ]
    );
}

#[test]
fn descriptor_set_names_every_service() {
    let set = prost_types::FileDescriptorSet::decode(avsnode_proto::FILE_DESCRIPTOR_SET).unwrap();
    let services: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| {
            f.service
                .iter()
                .map(move |s| format!("{}.{}", f.package(), s.name()))
        })
        .collect();
    for expected in [
        "eigenlayer.hourglass.v1.ExecutorService",
        "eigenlayer.hourglass.v1.ExecutorManagementService",
        "eigenlayer.hourglass.v1.performer.PerformerService",
        "avsnode.v1.TaskStream",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} missing from {services:?}"
        );
    }
}
