#![allow(clippy::unwrap_used)]
//! The monitoring files in `deploy/` (DESIGN §8), checked the way an operator's tools read them:
//! `promtool` accepts the alert rules and the Prometheus configuration and passes the rules' unit
//! tests (`deploy/prometheus/alerts_test.yml`), and the Grafana dashboard and the alerts name only
//! metrics the node exports, so a misspelt metric fails here instead of drawing an empty panel or
//! an alert that never fires.
//!
//! `promtool` comes with Prometheus (`apt-get install prometheus`); `PROMTOOL` may name another
//! binary. Without it the promtool tests skip with a note on stderr, except under CI (`CI=true`),
//! where they fail.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

/// Every metric of DESIGN §8, `avsnode_ready`, the shared ledger's two (docs/REPLICAS.md) and
/// those of `[chain]` (docs/OPERATING.md "Reading from chain").
const AVSNODE_METRICS: &[&str] = &[
    "avsnode_tasks_received_total",
    "avsnode_tasks_completed_total",
    "avsnode_task_rejections_total",
    "avsnode_task_stage_seconds",
    "avsnode_tasks_inflight",
    "avsnode_queue_depth",
    "avsnode_streams_open",
    "avsnode_performer_up",
    "avsnode_performer_restarts_total",
    "avsnode_performer_deployments_total",
    "avsnode_signatures_total",
    "avsnode_sign_seconds",
    "avsnode_aggregator_signature_batch_size",
    "avsnode_ledger_records",
    "avsnode_ledger_conflicts_total",
    "avsnode_ledger_commit_seconds",
    "avsnode_ledger_up",
    "avsnode_chain_rpc_calls_total",
    "avsnode_chain_rpc_seconds",
    "avsnode_chain_cache_total",
    "avsnode_chain_cache_facts",
    "avsnode_chain_head_block",
    "avsnode_chain_head_lag_blocks",
    "avsnode_chain_follower_errors_total",
    "avsnode_chain_reorgs_total",
    "avsnode_chain_up",
    "avsnode_ledger_unavailable_total",
    "avsnode_build_info",
    "avsnode_ready",
];

/// The histograms among them: only these have `_bucket`, `_sum` and `_count` series.
const HISTOGRAMS: &[&str] = &[
    "avsnode_task_stage_seconds",
    "avsnode_sign_seconds",
    "avsnode_aggregator_signature_batch_size",
    "avsnode_ledger_commit_seconds",
    "avsnode_chain_rpc_seconds",
];

/// The standard process metrics the dashboard may use besides ours.
const PROCESS_METRICS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
];

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERTS_TEST: &str = "deploy/prometheus/alerts_test.yml";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
const DASHBOARD: &str = "deploy/grafana/avsnode-dashboard.json";

/// The outcome of one promtool run, stdout and stderr together (promtool splits its messages
/// between them).
struct PromtoolRun {
    success: bool,
    output: String,
}

/// `promtool ARGS` in the workspace root, or `None` (after saying why) when promtool is not
/// installed and this is not CI.
#[expect(clippy::print_stderr, reason = "a test that skips says why on stderr")]
fn promtool(args: &[&str]) -> Option<PromtoolRun> {
    let program = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    let result = Command::new(&program)
        .args(args)
        .current_dir(avsnode_tests::workspace_root())
        .output();
    let output = match result {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool ({}) is not installed, and CI must check the monitoring files: \
                 install Prometheus (apt-get install prometheus) or set PROMTOOL",
                program.display()
            );
            eprintln!(
                "skipping `promtool {}`: {} is not installed (apt-get install prometheus, or set \
                 PROMTOOL)",
                args.join(" "),
                program.display()
            );
            return None;
        }
        Err(e) => panic!("running {}: {e}", program.display()),
    };
    Some(PromtoolRun {
        success: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Asserts that promtool succeeded without a warning (duplicate rules, for one).
fn assert_clean(run: &PromtoolRun, what: &str) {
    assert!(run.success, "promtool {what} failed:\n{}", run.output);
    assert!(
        !run.output.to_lowercase().contains("warn"),
        "promtool {what} warned:\n{}",
        run.output
    );
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let Some(run) = promtool(&["check", "rules", ALERTS]) else {
        return;
    };
    assert_clean(&run, &format!("check rules {ALERTS}"));
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let Some(run) = promtool(&["test", "rules", ALERTS_TEST]) else {
        return;
    };
    assert!(
        run.success,
        "promtool test rules {ALERTS_TEST} failed:\n{}",
        run.output
    );
}

#[test]
fn promtool_accepts_the_prometheus_config_and_finds_its_rules() {
    let Some(run) = promtool(&["check", "config", PROMETHEUS_CONFIG]) else {
        return;
    };
    assert_clean(&run, &format!("check config {PROMETHEUS_CONFIG}"));
    // rule_files is relative to the config: promtool checks the rules it resolves to.
    assert!(
        run.output.contains("alerts.yml"),
        "promtool check config did not check alerts.yml:\n{}",
        run.output
    );
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = dashboard_queries();
    // Grafana's variables become what Grafana would send, and each query a recording rule, so
    // promtool parses it.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (panel, expr)) in queries.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "1m").replace("$avs", ".*");
        rules += &format!("      # {panel}\n");
        rules += &format!("      - record: dashboard:query:{i}\n");
        // A JSON string is a YAML double-quoted string.
        rules += &format!("        expr: {}\n", serde_json::to_string(&expr).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard_queries.yml");
    std::fs::write(&file, rules).unwrap();
    let Some(run) = promtool(&["check", "rules", file.to_str().unwrap()]) else {
        return;
    };
    assert_clean(&run, &format!("check rules (the queries of {DASHBOARD})"));
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "only {} queries found", queries.len());
    let mut used = BTreeSet::new();
    for (panel, expr) in queries.iter().chain(&variable_queries()) {
        for name in metric_names(expr) {
            assert!(
                is_exported(&name),
                "panel \"{panel}\" queries {name}, which the node does not export: {expr}"
            );
            used.insert(name);
        }
    }
    // The panels DESIGN §8 asks for, and the variable every panel filters on.
    for name in [
        "avsnode_tasks_completed_total",
        "avsnode_task_rejections_total",
        "avsnode_task_stage_seconds_bucket",
        "avsnode_tasks_inflight",
        "avsnode_queue_depth",
        "avsnode_performer_up",
        "avsnode_performer_restarts_total",
        "avsnode_signatures_total",
        "avsnode_sign_seconds_bucket",
        "avsnode_ledger_records",
        "avsnode_ledger_conflicts_total",
        "avsnode_ledger_commit_seconds_bucket",
        "avsnode_streams_open",
        "avsnode_build_info",
        "avsnode_tasks_received_total",
    ] {
        assert!(used.contains(name), "no dashboard panel queries {name}");
    }
}

#[test]
fn the_alert_rules_and_their_tests_name_only_exported_metrics() {
    for file in [ALERTS, ALERTS_TEST] {
        let text = read(file);
        for name in metric_names(&text) {
            assert!(
                is_exported(&name),
                "{file} names {name}, which the node does not export"
            );
        }
    }
}

#[test]
fn the_metric_check_catches_a_misspelt_name() {
    let names = metric_names(
        r#"sum(rate(avsnode_task_received_total{avs=~"$avs"}[5m])) / avsnode_ledger_records_count
           + rate(avsnode_sign_seconds_bucket[1m]) + process_cpu_second_total"#,
    );
    let unknown: Vec<_> = names.iter().filter(|n| !is_exported(n)).collect();
    assert_eq!(
        unknown,
        [
            "avsnode_ledger_records_count",
            "avsnode_task_received_total",
            "process_cpu_second_total"
        ]
    );
    assert!(names.contains("avsnode_sign_seconds_bucket"));
}

#[test]
fn every_dashboard_panel_uses_the_datasource_variable() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` template variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let avs = variables
        .iter()
        .find(|v| v["name"] == "avs")
        .expect("an `avs` template variable");
    assert_eq!(
        avs["query"]["query"],
        "label_values(avsnode_tasks_received_total, avs)"
    );

    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title}");
        let targets = panel["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "panel {title} has no query"
        );
        for target in targets.unwrap() {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {title}"
            );
        }
    }
}

fn read(path: &str) -> String {
    let path = avsnode_tests::workspace_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, into: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            into.push(panel);
            walk(&panel["panels"], into);
        }
    }
    let mut all = Vec::new();
    walk(&dashboard["panels"], &mut all);
    all
}

/// (panel title, expression) of every panel query.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str();
            let expr = expr.unwrap_or_else(|| panic!("panel {title}: a target without expr"));
            queries.push((title.to_owned(), expr.to_owned()));
        }
    }
    queries
}

/// (variable name, query) of the template variables that query Prometheus (Grafana's
/// `label_values(…)`, not PromQL).
fn variable_queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            let name = variable["name"].as_str().unwrap_or("?");
            queries.push((format!("variable {name}"), query.to_owned()));
        }
    }
    queries
}

/// The `avsnode_…` and `process_…` metric names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["avsnode_", "process_"] {
        for (start, _) in text.match_indices(prefix) {
            let before = text[..start].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(text.len(), |n| start + n);
            names.insert(text[start..end].to_owned());
        }
    }
    names
}

/// Whether a series name is one the node exports: a metric of DESIGN §8, a series of one of its
/// histograms, or a standard process metric.
fn is_exported(name: &str) -> bool {
    if AVSNODE_METRICS.contains(&name) || PROCESS_METRICS.contains(&name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| HISTOGRAMS.contains(&base))
    })
}
