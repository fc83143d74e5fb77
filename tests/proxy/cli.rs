//! The command line and what an operator meets first: `check-config` names what is wrong
//! and where, moments as the README writes them, errors said once, metrics from the start.

use std::process::Command;

fn check_config(yaml: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regkeeper.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_regkeeper"));
    command.arg("check-config").arg("--config").arg(&path);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn example_config_checks_and_prints_effective_values() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/regkeeper.yaml"
    ))
    .unwrap();
    let (ok, stdout, stderr) = check_config(&yaml, &[("REGKEEPER_LISTEN", "127.0.0.1:6001")]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("127.0.0.1:6001"), "{stdout}");
    assert!(stdout.contains("http://127.0.0.1:5000"), "{stdout}");
}

#[test]
fn bad_field_fails_with_line_and_name() {
    let (ok, _, stderr) = check_config(
        "upstream:\n  url: http://127.0.0.1:5000\nlimits:\n  maxHeaderByte: 10\n",
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("maxHeaderByte"), "{stderr}");
}

#[test]
fn malformed_yaml_fails_with_line() {
    let (ok, _, stderr) = check_config("upstream:\n  url: [http://x\n", &[]);
    assert!(!ok);
    assert!(stderr.contains("line"), "{stderr}");
}

#[test]
fn moments_before_now_and_unix_seconds_are_accepted_as_the_readme_writes_them() {
    let registry = crate::support::Registry::start();
    let work = tempfile::tempdir().unwrap();
    let config = crate::support::regkeeper::cli_config(
        work.path(),
        &registry.url(),
        "retention:\n  scopes:\n    - name: all\n      include: [\"**\"]\n",
    );
    let run = |args: &[&str]| crate::support::regkeeper::run_cli(&config, args, &[]);
    run(&["sync"]).expect_ok();
    run(&["plan", "--at", "-12h"]).expect_ok();
    run(&["plan", "--at", "1796050984", "--output", "json"]).expect_ok();
    run(&["history", "--since", "-2m"]).expect_ok();
    let bad = run(&["plan", "--at", "-fortnight"]);
    assert!(!bad.ok);
    assert!(bad.stderr.contains("fortnight"), "{}", bad.stderr);
}

#[test]
fn an_error_says_its_cause_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_regkeeper"))
        .args(["check-config", "--config", "/nonexistent/regkeeper.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/regkeeper.yaml"), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

#[test]
fn the_counters_alerts_watch_exist_at_zero_from_the_start() {
    let registry = crate::support::Registry::start();
    let regkeeper = crate::support::Regkeeper::start(&registry.url());
    let (status, metrics) = regkeeper.admin_text("/metrics");
    assert_eq!(status, 200);
    for series in [
        "regkeeper_cleanup_breaker_trips_total 0",
        "regkeeper_upstream_errors_total{cause=\"upstream-io\"} 0",
        "regkeeper_index_dropped_events_total{queue=\"events\"} 0",
        "regkeeper_cleanup_skipped_total{cause=\"failed\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} in:\n{metrics}"
        );
    }
    let version = format!(
        "regkeeper_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.lines().any(|l| l == version), "{metrics}");
}
