use std::{collections::HashMap, path::Path};

use super::*;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_str(Path::new("test.yaml"), text, |var| env.get(var).cloned())
}

const MINIMAL: &str = "upstream:\n  url: http://127.0.0.1:5000\n";

#[test]
fn minimal_config_gets_defaults() {
    let config = load(MINIMAL, &[]).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:5050");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(config.timeouts.upstream_response.to_string(), "2m");
    assert!(config.tls.is_none());
    assert!(config.log.requests);
}

#[test]
fn bad_value_names_line_and_problem() {
    let text = "listen: 127.0.0.1:5050\nupstream:\n  url: ftp://nowhere\n";
    let error = load(text, &[]).unwrap_err().to_string();
    assert!(error.contains("line 3"), "{error}");
    assert!(error.contains("scheme must be http or https"), "{error}");
}

#[test]
fn unknown_field_is_named_with_its_line() {
    let text = "upstream:\n  url: http://x\ntimeouts:\n  conect: 5s\n";
    let error = load(text, &[]).unwrap_err().to_string();
    assert!(error.contains("conect"), "{error}");
    assert!(error.contains("line 4"), "{error}");
}

#[test]
fn bad_duration_names_line_and_unit() {
    let text = "upstream:\n  url: http://x\ntimeouts:\n  connect: 5 weeks\n";
    let error = load(text, &[]).unwrap_err().to_string();
    assert!(error.contains("line 4"), "{error}");
    assert!(error.contains("unknown unit"), "{error}");
}

#[test]
fn missing_upstream_is_reported() {
    let error = load("listen: 127.0.0.1:1\n", &[]).unwrap_err().to_string();
    assert!(error.contains("upstream"), "{error}");
}

#[test]
fn environment_overrides_win_and_bad_ones_name_the_variable() {
    let config = load(
        MINIMAL,
        &[
            ("REGKEEPER_LISTEN", "127.0.0.1:6000"),
            ("REGKEEPER_UPSTREAM_URL", "https://registry.example.com"),
            ("REGKEEPER_TIMEOUTS_CONNECT", "2s"),
            (
                "REGKEEPER_UPSTREAM_ADVERTISED_HOSTS",
                "a.example.com, b.example.com",
            ),
        ],
    )
    .unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:6000");
    assert!(config.upstream.url.is_https());
    assert_eq!(config.timeouts.connect.to_string(), "2s");
    assert_eq!(
        config.upstream.advertised_hosts,
        ["a.example.com", "b.example.com"]
    );

    let error = load(MINIMAL, &[("REGKEEPER_TIMEOUTS_CONNECT", "soon")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("REGKEEPER_TIMEOUTS_CONNECT"), "{error}");
    assert!(error.contains("timeouts.connect"), "{error}");
}

#[test]
fn tls_files_must_exist() {
    let text =
        format!("{MINIMAL}tls:\n  cert: /nonexistent/cert.pem\n  key: /nonexistent/key.pem\n");
    let error = load(&text, &[]).unwrap_err().to_string();
    assert!(error.contains("tls.cert"), "{error}");
}

#[test]
fn same_listen_and_admin_address_is_rejected() {
    let text = format!("{MINIMAL}listen: 127.0.0.1:7000\nadmin:\n  listen: 127.0.0.1:7000\n");
    let error = load(&text, &[]).unwrap_err().to_string();
    assert!(error.contains("admin.listen"), "{error}");
}

#[test]
fn effective_config_renders_and_reloads() {
    let config = load(MINIMAL, &[]).unwrap();
    let yaml = config.to_yaml();
    let again = load(&yaml, &[]).unwrap();
    assert_eq!(again.to_yaml(), yaml);
}

#[test]
fn example_config_in_repository_is_valid() {
    let text = include_str!("../../config/regkeeper.yaml");
    load(text, &[]).unwrap();
}

#[test]
fn every_override_names_a_distinct_variable() {
    let mut seen = std::collections::HashSet::new();
    for over in ENV_OVERRIDES {
        assert!(over.var.starts_with("REGKEEPER_"));
        assert!(seen.insert(over.var), "{} twice", over.var);
    }
}

#[test]
fn readme_documents_exactly_the_overrides_that_exist() {
    let readme = include_str!("../../README.md");
    let documented: std::collections::BTreeSet<&str> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `REGKEEPER_"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let existing: std::collections::BTreeSet<&str> = ENV_OVERRIDES
        .iter()
        .map(|o| o.var.trim_start_matches("REGKEEPER_"))
        .collect();
    assert_eq!(documented, existing, "README table vs ENV_OVERRIDES");
}

#[test]
fn every_override_takes_effect() {
    let cases = [
        ("REGKEEPER_INDEX_RECORD", "false"),
        ("REGKEEPER_ADMIN_LINK_TOKEN", "0123456789abcdef0123"),
        ("REGKEEPER_WORKERS", "3"),
    ];
    for (var, _) in cases {
        assert!(ENV_OVERRIDES.iter().any(|o| o.var == var), "{var} missing");
    }
    let config = load(MINIMAL, &cases).unwrap();
    assert!(!config.index.record);
    assert_eq!(
        config.admin.link_token.as_deref(),
        Some("0123456789abcdef0123")
    );
    assert_eq!(config.workers, 3);
}

#[test]
fn a_werf_keep_policies_block_pastes_in_unchanged() {
    // werf's documentation example, as it sits under `cleanup:` in a werf.yaml.
    let werf = "keepPolicies:\n- references:\n    tag: /.*/\n    limit:\n      last: 10\n- references:\n    branch: /.*/\n    limit:\n      last: 10\n      in: 168h\n      operator: And\n  imagesPerReference:\n    last: 2\n    in: 168h\n    operator: And\n- references:\n    branch: /^(main|master|staging|production)$/\n  imagesPerReference:\n    last: 10\n";
    let indented: String = werf.lines().map(|l| format!("      {l}\n")).collect();
    let text = format!(
        "{MINIMAL}retention:\n  scopes:\n    - name: all\n      include: [\"**\"]\n{indented}"
    );
    let config = load(&text, &[]).unwrap();
    assert_eq!(
        config.retention.scopes[0].keep_policies,
        werf_default_policies()
    );
}

#[test]
fn retention_mistakes_name_their_field() {
    let scope = |body: &str| {
        format!(
            "{MINIMAL}retention:\n  scopes:\n    - name: s\n      include: [\"team/*\"]\n{body}"
        )
    };
    let cases = [
        (
            scope("      keepPolicies:\n        - references: {tag: /.*/, branch: main}\n"),
            "retention.scopes[0].keepPolicies[0].references",
            "not both",
        ),
        (
            scope("      keepPolicies:\n        - references: {branch: \"/(unclosed/\"}\n"),
            "line 8",
            "\"/(unclosed/\" is not a valid pattern: unclosed group",
        ),
        (
            scope("      tags: [\"^v(\"]\n"),
            "retention.scopes[0].tags[0]",
            "regex",
        ),
        (
            scope("      pushedWithin: 3 fortnights\n"),
            "line 7",
            "unknown unit \" fortnights\"",
        ),
        (
            format!(
                "{MINIMAL}retention:\n  kubernetes:\n    clusters:\n      - {{name: prod, inCluster: true}}\n"
            ),
            "retention.kubernetes.registryHosts",
            "nothing in use would be protected",
        ),
        (
            scope(
                "      keepPolicies:\n        - references: {branch: main}\n          imagesPerReference: {lastt: 2}\n",
            ),
            "lastt",
            "line 9",
        ),
    ];
    for (text, field, words) in cases {
        let error = load(&text, &[]).unwrap_err().to_string();
        assert!(error.contains(field), "{field}: {error}");
        assert!(
            error.to_lowercase().contains(&words.to_lowercase()),
            "{words}: {error}"
        );
    }
}

#[test]
fn cleanup_schedule_is_a_cron_expression_checked_with_its_line() {
    let config = load(
        &format!("{MINIMAL}cleanup:\n  schedule: \"0 3 * * *\"\n"),
        &[],
    )
    .unwrap();
    assert_eq!(config.cleanup.schedule.unwrap().to_string(), "0 3 * * *");
    let error = load(
        &format!("{MINIMAL}cleanup:\n  schedule: \"0 25 * * *\"\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("line 4") && error.contains("hour: 25"),
        "{error}"
    );
    let error = load(
        &format!("{MINIMAL}cleanup:\n  schedule: \"@daily\"\n  interval: 6h\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("cleanup.schedule") && error.contains("not both"),
        "{error}"
    );
    let error = load(MINIMAL, &[("REGKEEPER_CLEANUP_SCHEDULE", "every night")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("REGKEEPER_CLEANUP_SCHEDULE"), "{error}");
}

#[test]
fn a_bad_reference_pattern_names_its_line_and_shows_it_as_written() {
    let text = "upstream:\n  url: http://x\nretention:\n  scopes:\n    - name: all\n      include: [\"**\"]\n      keepPolicies:\n        - references:\n            branch: /feature-(x/\n";
    let error = load(text, &[]).unwrap_err().to_string();
    assert!(error.contains("test.yaml"), "{error}");
    assert!(error.contains("line 9"), "{error}");
    assert!(error.contains("\"/feature-(x/\""), "{error}");
    assert_eq!(
        error.matches("line 9").count(),
        1,
        "location said once: {error}"
    );
    assert!(
        !error.contains("^feature"),
        "the rewritten pattern leaks: {error}"
    );
}

#[test]
fn a_top_level_alternation_loads_with_a_warning_naming_the_field() {
    let text = "upstream:\n  url: http://x\nretention:\n  scopes:\n    - name: all\n      include: [\"**\"]\n      keepPolicies:\n        - references:\n            branch: /main|3/\n";
    let config = load(text, &[]).unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("retention.scopes[0].keepPolicies[0].references.branch"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("/^(main|3)$/"), "{warnings:?}");
}

#[test]
fn the_shared_index_needs_a_url_and_takes_it_from_the_environment() {
    let text = format!("{MINIMAL}index:\n  backend: postgres\n");
    let error = load(&text, &[]).unwrap_err().to_string();
    assert!(error.contains("index.postgres.url"), "{error}");

    let config = load(
        &text,
        &[(
            "REGKEEPER_INDEX_POSTGRES_URL",
            "postgres://regkeeper@127.0.0.1:5432/regkeeper",
        )],
    )
    .unwrap();
    let postgres = config.index.postgres.unwrap();
    assert_eq!(
        postgres.url,
        "postgres://regkeeper@127.0.0.1:5432/regkeeper"
    );
    assert_eq!(postgres.connections, 8);

    let text = format!(
        "{MINIMAL}index:\n  backend: postgres\n  postgres:\n    url: postgres://x@db/r\n    passwordFile: /nonexistent/password\n"
    );
    let error = load(&text, &[]).unwrap_err().to_string();
    assert!(error.contains("index.postgres.passwordFile"), "{error}");

    let text = format!("{MINIMAL}index:\n  backend: mysql\n");
    let error = load(&text, &[]).unwrap_err().to_string();
    assert!(
        error.contains("line 4") && error.contains("mysql"),
        "{error}"
    );
}
