//! The example performer as the process a node or a container runs: it listens where it is told,
//! squares payloads over the Hourglass `PerformerService`, refuses a payload it cannot square,
//! stops cleanly on SIGTERM (even one sent as soon as it listens), and `--exit-after 0` exits at once with a failure (the crash-looping
//! image of the node's restart tests).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use avsnode_example_performer::square;
use avsnode_proto::performer::TaskRequest;
use avsnode_proto::performer::performer_service_client::PerformerServiceClient;
use rustix::process::{Pid, Signal, kill_process};

const BINARY: &str = env!("CARGO_BIN_EXE_avsnode-example-performer");

/// Starts the performer on a free loopback port; returns it and the address its listening line
/// names.
fn start() -> (Child, String) {
    let mut child = Command::new(BINARY)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "example performer listening on 127.0.0.1:PORT"
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|_| line.contains("listening on"))
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .to_owned();
    (child, addr)
}

/// Sends SIGTERM and asserts the performer exits successfully within 10 s (waiting on the runtime:
/// a client of the performer on it must see the connection close for the stop to be graceful).
async fn assert_sigterm_stops_cleanly(mut child: Child) {
    kill_process(Pid::from_child(&child), Signal::TERM).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "SIGTERM is a clean stop: {exit:?}");
}

#[tokio::test]
async fn serves_squares_and_stops_on_sigterm() {
    let (child, addr) = start();

    let mut client = PerformerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let task_id = format!("0x{}", "ab".repeat(32)).into_bytes();
    for payload in [vec![], vec![7], u64::MAX.to_be_bytes().to_vec()] {
        let response = client
            .execute_task(TaskRequest {
                task_id: task_id.clone(),
                payload: payload.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.task_id, task_id, "the task id is echoed");
        assert_eq!(
            response.result,
            square(&payload).unwrap(),
            "payload {payload:?}"
        );
    }
    let status = client
        .execute_task(TaskRequest {
            task_id,
            payload: vec![1; 9],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_sigterm_stops_cleanly(child).await;
}

/// A runtime may stop the performer as soon as it says it listens: that is a clean stop too, not
/// death by the signal (its handlers are in place before the line is printed).
#[tokio::test]
async fn a_sigterm_as_soon_as_it_listens_is_a_clean_stop() {
    for _ in 0..5 {
        let (child, _) = start();
        assert_sigterm_stops_cleanly(child).await;
    }
}

#[test]
fn exit_after_zero_fails_at_once() {
    let out = Command::new(BINARY)
        .args(["--port", "0", "--exit-after", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exiting at once"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
