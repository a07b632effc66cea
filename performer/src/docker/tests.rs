#![allow(clippy::unwrap_used)]

use super::container::*;
use super::logs::*;
use super::spec::*;
use crate::{HealthPolicy, RestartPolicy};
use std::time::Duration;

fn spec() -> DockerSpec {
    DockerSpec {
        node_id: "node".into(),
        avs: "0x00000000000000000000000000000000000000aa".into(),
        performer_id: "p1".into(),
        image: "example:1".into(),
        pull: PullPolicy::default(),
        auth: Some(RegistryAuth {
            username: "me".into(),
            password: "hunter2".into(),
        }),
        network: "avsnode".into(),
        egress: true,
        port: 8080,
        env: vec![("API_KEY".into(), "s3cret".into())],
        hardening: Hardening::default(),
        resources: Resources::default(),
        health: HealthPolicy::default(),
        restart: RestartPolicy::default(),
        log_lines_per_second: 50,
    }
}

#[test]
fn pull_policy_round_trips() {
    for policy in [
        PullPolicy::Always,
        PullPolicy::IfNotPresent,
        PullPolicy::Never,
    ] {
        assert_eq!(policy.to_string().parse::<PullPolicy>().unwrap(), policy);
    }
    assert_eq!(PullPolicy::default(), PullPolicy::IfNotPresent);
    let err = "sometimes".parse::<PullPolicy>().unwrap_err();
    assert!(err.to_string().contains("if-not-present"), "{err}");
}

#[test]
fn debug_hides_secrets() {
    let debug = format!("{:?}", spec());
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(
        debug.contains("API_KEY") && debug.contains("<redacted>"),
        "{debug}"
    );
}

#[test]
fn an_unset_or_zero_image_user_is_root() {
    for root in ["", "root", "0", "0:0", "root:root"] {
        assert!(runs_as_root(root), "{root:?}");
    }
    for other in ["65534", "65534:65534", "nobody", "1000:0"] {
        assert!(!runs_as_root(other), "{other:?}");
    }
}

#[test]
fn fingerprint_changes_with_the_container_config_only() {
    let base = fingerprint(&spec(), "sha256:aa");
    assert_eq!(base, fingerprint(&spec(), "sha256:aa"));
    assert_eq!(base.len(), 64);
    assert_ne!(base, fingerprint(&spec(), "sha256:bb"));
    let changes: [fn(&mut DockerSpec); 8] = [
        |s| s.env[0].1 = "other".into(),
        |s| s.port = 9090,
        |s| s.hardening.user = Some("65534".into()),
        |s| s.hardening.read_only_rootfs = false,
        |s| s.resources.pids_limit = None,
        |s| s.network = "other".into(),
        |s| s.egress = false,
        |s| s.hardening.private_cgroup_namespace = false,
    ];
    for change in changes {
        let mut changed = spec();
        change(&mut changed);
        assert_ne!(base, fingerprint(&changed, "sha256:aa"), "{changed:?}");
    }
    let mut health_only = spec();
    health_only.health.interval = Duration::from_secs(1);
    health_only.log_lines_per_second = 1;
    assert_eq!(base, fingerprint(&health_only, "sha256:aa"));
}

#[test]
fn parses_docker_timestamps() {
    let at = |stamp| parse_timestamp(stamp).map(|d| (d.as_secs(), d.subsec_nanos()));
    assert_eq!(at("1970-01-01T00:00:00Z"), Some((0, 0)));
    assert_eq!(
        at("2026-11-22T13:37:37.362071Z"),
        Some((1_795_354_657, 362_071_000))
    );
    assert_eq!(at("2000-02-29T23:59:59.000000001Z"), Some((951_868_799, 1)));
    assert_eq!(
        at("2026-11-22T15:37:37.5+02:00"),
        Some((1_795_354_657, 500_000_000))
    );
    assert_eq!(at("2026-11-22T10:37:37-03:00"), Some((1_795_354_657, 0)));
    for bad in [
        "",
        "hello",
        "2026-11-22 13:37:37Z",
        "2026-11-22T13:37:37",
        "2026-1x-22T13:37:37Z",
    ] {
        assert_eq!(at(bad), None, "{bad}");
    }
}

#[test]
fn line_limit_allows_bursts_then_the_rate() {
    let mut limit = LineLimit::new(5);
    let admitted = (0..100).filter(|_| limit.admit()).count();
    assert_eq!(admitted, 10);
    assert_eq!(limit.dropped, 90);
    limit.report();
    assert_eq!(limit.dropped, 0);
}
