//! SIGHUP reloads of the configuration file, against the real `avsnode run`: a valid change is
//! applied while tasks run (none dropped; new tasks see the new aggregators, limits and
//! performer), and a change that cannot be applied is refused whole, naming the problem, with the
//! node serving on as before.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{AVS, AvsSpec, Fixture, SCHEMES, TestNode, sample};
use avsnode_aggregator::{Aggregator, NewTask};
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_proto::stream::stream_event;
use avsnode_signer::Scheme;
use avsnode_signing::LocalKey;
use tonic::Code;

/// A second AVS, served with the example performer's defaults.
const SECOND_AVS: &str = "0x000000000000000000000000000000000000b0b0";

/// The payload limit the reloaded configurations set.
const NEW_MAX_PAYLOAD: usize = 4;

/// A payload over [`NEW_MAX_PAYLOAD`] that the example performer squares (at most 8 bytes).
const LONG_PAYLOAD: [u8; 6] = [1, 2, 3, 4, 5, 6];

/// The configuration text `node` runs with.
fn config_text(node: &TestNode) -> String {
    std::fs::read_to_string(node.config()).unwrap()
}

/// Replaces the configuration file `node` runs with (it reads it again on SIGHUP).
fn write_config(node: &TestNode, text: &str) {
    std::fs::write(node.config(), text).unwrap();
}

/// `text` with `from` replaced by `to`, which must occur exactly `count` times.
fn replace(text: &str, from: &str, to: &str, count: usize) -> String {
    assert_eq!(
        text.matches(from).count(),
        count,
        "{from:?} in the configuration:\n{text}"
    );
    text.replace(from, to)
}

/// `text` with `line` added to the `[[avs]]` table of `avs`.
fn with_avs_line(text: &str, avs: &str, line: &str) -> String {
    let table = format!("[[avs]]\naddress = \"{avs}\"\n");
    replace(text, &table, &format!("{table}{line}\n"), 1)
}

/// `text` with the example performer's `--marker` argument `from` changed to `to`.
fn with_marker(text: &str, from: &str, to: &str) -> String {
    replace(
        text,
        &format!("\"--marker\", \"{from}\""),
        &format!("\"--marker\", \"{to}\""),
        1,
    )
}

/// `text` without the aggregator of `scheme` in any AVS.
fn without_aggregator(text: &str, scheme: Scheme) -> String {
    let entry = format!("{{ scheme = \"{scheme}\",");
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with(&entry))
        .collect();
    assert!(
        kept.len() < text.lines().count(),
        "no {scheme} aggregator in:\n{text}"
    );
    kept.join("\n") + "\n"
}

/// `text` with `entry` (an inline table) added to every AVS's aggregators.
fn with_aggregator(text: &str, entry: &str, avs_count: usize) -> String {
    replace(
        text,
        "aggregators = [\n",
        &format!("aggregators = [\n  {entry},\n"),
        avs_count,
    )
}

/// An ECDSA aggregator the fixture does not know, and its configuration entry.
fn new_aggregator() -> (Aggregator, String) {
    let key = LocalKey::generate(Scheme::Ecdsa);
    let LocalKey::Ecdsa(secret) = &key else {
        unreachable!("generated an ECDSA key")
    };
    let address = secret.public_key().address();
    (
        Aggregator::new(address, key),
        format!("{{ scheme = \"ecdsa\", address = \"{address}\" }}"),
    )
}

/// Checks `result` as the answer of an example performer with `--marker MARKER` for one of
/// `markers`; returns the marker.
fn marker_of<'m>(
    fixture: &Fixture,
    result: &TaskResult,
    task: &NewTask,
    markers: &[&'m str],
) -> &'m str {
    let mut failures = Vec::new();
    for marker in markers {
        match fixture.verify_marked(result, task, marker) {
            Ok(()) => return marker,
            Err(e) => failures.push(e),
        }
    }
    panic!("the result verifies with none of the markers {markers:?}: {failures:?}")
}

/// Waits (at most `within`) until a JSON log line with `message` is logged after the first
/// `skip` such lines, and returns its fields.
fn wait_for_log(
    node: &TestNode,
    message: &str,
    skip: usize,
    within: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let found = node
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|value| value.get("fields").cloned())
            .filter(|fields| fields["message"].as_str() == Some(message))
            .nth(skip);
        if let Some(fields) = found {
            return fields;
        }
        assert!(
            Instant::now() < deadline,
            "no log line {message:?} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_sighup_while_starting_is_a_reload_once_serving_not_the_end() {
    let node = TestNode::builder().hangup_while_starting().start();
    let _log = node.log_on_panic();
    wait_for_log(&node, "configuration reloaded", 0, Duration::from_secs(60));
    let fixture = node.fixture();
    let task = fixture.task(AVS, Scheme::Ecdsa, &[3]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    fixture.assert_verifies(&result, &task);
}

/// How many times `message` has been logged.
fn logged(node: &TestNode, message: &str) -> usize {
    node.log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|value| value["fields"]["message"].as_str() == Some(message))
        .count()
}

/// The processes the node started (its performers).
fn children(node: &TestNode) -> usize {
    let output = Command::new("pgrep")
        .args(["-P", &node.pid().unwrap().to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_new_settings_while_tasks_in_flight_finish_signed() {
    let node = Arc::new(
        TestNode::builder()
            .avs(
                AvsSpec::new(AVS)
                    .performer(&["--delay-ms", "6000", "--marker", "v1"])
                    // Room for the slow performer on a loaded machine.
                    .toml("task_timeout = \"60s\""),
            )
            .start(),
    );
    let _log = node.log_on_panic();
    let fixture = node.fixture().clone();
    let (newcomer, newcomer_entry) = new_aggregator();

    // Before: an aggregator not configured is refused (and the node has served before SIGHUP).
    let task = fixture.task(AVS, Scheme::Ecdsa, &[9]);
    let refused = node.submit(newcomer.sign(&task)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // In flight: per scheme a short, a 4-byte and a 6-byte payload (over the coming limit) from
    // its own aggregator (the BLS12-381 one is about to be removed), on a stream, and one unary.
    let batch: Vec<(NewTask, TaskSubmission)> = SCHEMES
        .into_iter()
        .flat_map(|scheme| {
            [&[3][..], &[1, 2, 3, 4], &LONG_PAYLOAD].map(|payload| {
                let task = fixture.task(AVS, scheme, payload);
                let submission = fixture.sign(scheme, &task);
                (task, submission)
            })
        })
        .collect();
    let streamed = {
        let node = node.clone();
        let submissions = batch.iter().map(|(_, s)| s.clone()).collect();
        tokio::spawn(async move { node.stream(submissions).await })
    };
    let unary_task = fixture.task(AVS, Scheme::Bls12381, &LONG_PAYLOAD);
    let unary = {
        let node = node.clone();
        let submission = fixture.sign(Scheme::Bls12381, &unary_task);
        tokio::spawn(async move { node.submit(submission).await })
    };

    // Every task admitted (past every check, holding a performer slot) before the reload.
    let admitted = batch.len() + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = node.scrape_metrics().await;
        let queued = sample(
            &metrics,
            "avsnode_task_stage_seconds_count",
            &[("avs", AVS), ("stage", "queue")],
        );
        if queued >= admitted as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{queued} of {admitted} tasks admitted within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The new configuration: a lower payload limit, the new aggregator in, the BLS12-381 one
    // out, and the performer replaced (marker v2, no delay).
    let next = config_text(&node);
    let next = with_avs_line(&next, AVS, &format!("max_payload_size = {NEW_MAX_PAYLOAD}"));
    let next = with_aggregator(&next, &newcomer_entry, 1);
    let next = without_aggregator(&next, Scheme::Bls12381);
    let next = with_marker(&next, "v1", "v2");
    let next = replace(
        &next,
        "\"--delay-ms\", \"6000\"",
        "\"--delay-ms\", \"0\"",
        1,
    );
    write_config(&node, &next);
    let reloaded_at = Instant::now();
    node.reload().expect("the new configuration is applied");
    let in_flight_at_reload = !streamed.is_finished() || !unary.is_finished();
    eprintln!(
        "reload applied in {:?}; tasks still in flight then: {in_flight_at_reload}",
        reloaded_at.elapsed()
    );
    let fields = wait_for_log(&node, "configuration reloaded", 0, Duration::from_secs(1));
    assert_eq!(fields["performers_changed"], 1, "{fields}");

    // New tasks see the new configuration.
    let task = fixture.task(AVS, Scheme::Ecdsa, &[2]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    assert_eq!(marker_of(&fixture, &result, &task, &["v2"]), "v2");
    let task = fixture.task(AVS, Scheme::Ecdsa, &[4, 4]);
    let result = node.submit(newcomer.sign(&task)).await.unwrap();
    marker_of(&fixture, &result, &task, &["v2"]);
    let task = fixture.task(AVS, Scheme::Bls12381, &[5]);
    let removed = node
        .submit(fixture.sign(Scheme::Bls12381, &task))
        .await
        .unwrap_err();
    assert_eq!(removed.code(), Code::PermissionDenied, "{removed:?}");
    assert!(
        removed.message().contains("not allowed to send tasks"),
        "{removed:?}"
    );
    let task = fixture.task(AVS, Scheme::Ecdsa, &LONG_PAYLOAD);
    let too_long = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument, "{too_long:?}");
    assert!(
        too_long
            .message()
            .contains(&format!("limit of {NEW_MAX_PAYLOAD} bytes")),
        "{too_long:?}"
    );
    let metrics = node.scrape_metrics().await;
    for (reason, count) in [("unknown_aggregator", 2.0), ("payload_too_large", 1.0)] {
        assert_eq!(
            sample(
                &metrics,
                "avsnode_task_rejections_total",
                &[("avs", AVS), ("reason", reason)]
            ),
            count,
            "{reason}"
        );
    }

    // Every task admitted before the reload is answered and signed under the configuration it
    // started with (6-byte payloads, the removed aggregator's tasks), none dropped.
    let events = tokio::time::timeout(Duration::from_secs(90), streamed)
        .await
        .expect("the stream answers within 90 s")
        .unwrap();
    let tasks: HashMap<String, &NewTask> = batch
        .iter()
        .map(|(task, _)| (task.task_id.to_wire_string(), task))
        .collect();
    let mut markers = Vec::new();
    for event in events {
        match event.kind.unwrap() {
            stream_event::Kind::Result(result) => {
                let task = tasks[&result.task_id];
                markers.push(marker_of(&fixture, &result, task, &["v1", "v2"]));
            }
            stream_event::Kind::Rejection(r) => {
                panic!("a task in flight during the reload was not signed: {r:?}")
            }
        }
    }
    let result = tokio::time::timeout(Duration::from_secs(90), unary)
        .await
        .expect("the unary task answers within 90 s")
        .unwrap()
        .expect("the unary task in flight during the reload is signed");
    markers.push(marker_of(&fixture, &result, &unary_task, &["v1", "v2"]));
    assert_eq!(markers.len(), admitted);
    eprintln!("markers of the tasks in flight: {markers:?}");

    // The replaced performer is stopped once its tasks are done.
    wait_for_log(
        &node,
        "reload: stopping the replaced performer",
        0,
        Duration::from_secs(90),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while children(&node) != 1 {
        assert!(
            Instant::now() < deadline,
            "{} performer processes 30 s after the reload, expected 1",
            children(&node)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A task that only the configuration the node started with signs: a 6-byte payload from the
/// BLS12-381 aggregator on [`AVS`], answered by the performer with marker v1; and one on
/// [`SECOND_AVS`].
async fn assert_original_settings(node: &TestNode) {
    let fixture = node.fixture();
    let task = fixture.task(AVS, Scheme::Bls12381, &LONG_PAYLOAD);
    let result = node
        .submit(fixture.sign(Scheme::Bls12381, &task))
        .await
        .unwrap();
    marker_of(fixture, &result, &task, &["v1"]);
    let task = fixture.task(SECOND_AVS, Scheme::Ecdsa, &[8]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    fixture.assert_verifies(&result, &task);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_be_applied_is_refused_whole_and_the_node_serves_on() {
    let node = TestNode::builder()
        .avs(AvsSpec::new(AVS).performer(&["--marker", "v1"]))
        .avs(AvsSpec::new(SECOND_AVS))
        .start();
    let _log = node.log_on_panic();
    let original = config_text(&node);
    assert_original_settings(&node).await;
    let performers = children(&node);
    assert_eq!(performers, 2);

    // Each bad configuration also carries valid changes (a lower payload limit, the BLS12-381
    // aggregator removed, a new performer): none of them may be applied.
    let changed = with_marker(&original, "v1", "v2");
    let changed = with_avs_line(
        &changed,
        AVS,
        &format!("max_payload_size = {NEW_MAX_PAYLOAD}"),
    );
    let changed = without_aggregator(&changed, Scheme::Bls12381);
    let config_name = node
        .config()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let second_avs_table = &original[original
        .find(&format!("[[avs]]\naddress = \"{SECOND_AVS}\""))
        .unwrap()..];
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "a TOML syntax error",
            format!("{changed}\n[[avs\n"),
            vec![config_name.clone()],
        ),
        (
            "max_concurrency = 0",
            with_avs_line(&changed, AVS, "max_concurrency = 0"),
            vec!["avs[0].max_concurrency".into()],
        ),
        (
            "a changed [[signer]]",
            replace(
                &changed,
                "[[signer]]\nname = \"ecdsa-key\"\n",
                "[[signer]]\nname = \"ecdsa-key\"\nallow_insecure_permissions = true\n",
                1,
            ),
            vec!["signers are opened at start".into()],
        ),
        (
            "an added AVS",
            format!(
                "{changed}\n{}",
                second_avs_table.replace(SECOND_AVS, "0x000000000000000000000000000000000000c0c0")
            ),
            vec!["adding or removing an AVS takes a restart".into()],
        ),
        (
            "a removed AVS",
            changed[..changed
                .find(&format!("\n[[avs]]\naddress = \"{SECOND_AVS}\""))
                .unwrap()]
                .to_owned()
                + "\n",
            vec!["adding or removing an AVS takes a restart".into()],
        ),
        (
            // The first AVS's new performer starts (staged), the second's cannot: both refused.
            "a performer that does not start",
            {
                let performer = avsnode_tests::binary("avsnode-example-performer")
                    .display()
                    .to_string();
                let at = changed.rfind(&format!("command = {performer:?}")).unwrap();
                let mut text = changed.clone();
                text.replace_range(
                    at..at + format!("command = {performer:?}").len(),
                    "command = \"/nonexistent/avsnode-performer\"",
                );
                text
            },
            vec!["avs[1].performer".into()],
        ),
    ];
    for (what, text, expected) in cases {
        write_config(&node, &text);
        let refused = node
            .reload()
            .expect_err(&format!("{what}: the reload must be refused"));
        eprintln!("{what}: {refused}");
        for part in expected {
            assert!(refused.contains(&part), "{what}: {part:?} in {refused}");
        }
        assert_original_settings(&node).await;
        // A performer started for the refused configuration is stopped again.
        let deadline = Instant::now() + Duration::from_secs(30);
        while children(&node) != performers {
            assert!(
                Instant::now() < deadline,
                "{what}: {} performer processes 30 s after the refusal, expected {performers}",
                children(&node)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(logged(&node, "configuration reloaded"), 0);

    // Listener and ledger settings wait for a restart; the rest of the same file is applied.
    let restart_only = replace(
        &changed,
        "[intake]\nlisten = \"127.0.0.1:0\"\n",
        "[intake]\nlisten = \"127.0.0.1:1\"\n",
        1,
    ) + "\n[ledger]\ncommit_delay = \"1ms\"\n";
    write_config(&node, &restart_only);
    node.reload().expect("the reload is applied");
    let warning = wait_for_log(
        &node,
        "reload: these sections changed and take effect at the next restart",
        0,
        Duration::from_secs(10),
    );
    let sections = warning["sections"].as_str().unwrap();
    assert!(
        sections.contains("[intake]") && sections.contains("[ledger]"),
        "{warning}"
    );
    let fixture = node.fixture();
    let task = fixture.task(AVS, Scheme::Ecdsa, &[2]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    marker_of(fixture, &result, &task, &["v2"]);
    let task = fixture.task(AVS, Scheme::Bls12381, &[2]);
    let removed = node
        .submit(fixture.sign(Scheme::Bls12381, &task))
        .await
        .unwrap_err();
    assert_eq!(removed.code(), Code::PermissionDenied, "{removed:?}");
    let task = fixture.task(AVS, Scheme::Ecdsa, &LONG_PAYLOAD);
    let too_long = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument, "{too_long:?}");
}
