//! The deployment kit in `deploy/`: every overlay renders with `kubectl kustomize`, validates
//! against the Kubernetes schemas offline (`kubernetes-validate`, in the venv `.ci/run`
//! creates), carries a config `regkeeper check-config` accepts, grants exactly the list calls
//! the code makes, runs locked down, and agrees with the Dockerfile.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use serde_json::Value;

const OVERLAYS: [&str; 3] = ["single", "ha", "sidecar"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rendered documents of an overlay.
fn render(overlay: &str) -> Vec<Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join("deploy/overlays").join(overlay))
        .output()
        .expect("kubectl (Debian kubernetes-client; .ci/run installs it)");
    assert!(
        output.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    text.split("\n---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
}

/// The regkeeper workload (a StatefulSet or a Deployment).
fn workload(docs: &[Value]) -> &Value {
    docs.iter()
        .find(|d| d["kind"] == "StatefulSet" || d["kind"] == "Deployment")
        .expect("a workload")
}

fn regkeeper_container(workload: &Value) -> &Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "regkeeper")
        .unwrap()
}

fn config_text(docs: &[Value]) -> String {
    named(docs, "ConfigMap", "regkeeper").unwrap()["data"]["regkeeper.yaml"]
        .as_str()
        .unwrap()
        .to_string()
}

fn validator() -> PathBuf {
    let venv = std::env::var_os("REGKEEPER_VENV")
        .map_or_else(|| PathBuf::from("/var/tmp/regkeeper-venv"), PathBuf::from);
    let tool = venv.join("bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: .ci/run creates the venv (python3 -m venv {}; pip install kubernetes-validate)",
        tool.display(),
        venv.display()
    );
    tool
}

#[test]
fn every_overlay_renders_and_validates_against_the_kubernetes_schemas() {
    let validator = validator();
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let docs = render(overlay);
        let file = dir.path().join(format!("{overlay}.yaml"));
        let text: Vec<String> = docs
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect();
        // JSON is YAML: one document per object.
        std::fs::write(&file, text.join("\n---\n")).unwrap();
        let output = Command::new(&validator)
            .args(["--strict", "--quiet", "--kubernetes-version", "1.32.0"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{overlay}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The operator's kinds have no schema there: checked by what they must say.
        let monitor = named(&docs, "ServiceMonitor", "regkeeper").unwrap();
        let admin = named(&docs, "Service", "regkeeper-admin").unwrap();
        for (key, value) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&admin["metadata"]["labels"][key], value, "{overlay}");
        }
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    }
}

#[test]
fn every_rendered_config_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let docs = render(overlay);
        let config = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&config, config_text(&docs)).unwrap();
        // What the pod's environment sets: secrets stand in as placeholders.
        let mut command = Command::new(env!("CARGO_BIN_EXE_regkeeper"));
        command.args(["check-config", "--config"]).arg(&config);
        for variable in regkeeper_container(workload(&docs))["env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = variable["name"].as_str().unwrap();
            let value = match name {
                "REGKEEPER_INDEX_POSTGRES_URL" => "postgres://regkeeper@db.example/regkeeper",
                _ => "placeholder-secret-0123456789",
            };
            command.env(name, variable["value"].as_str().unwrap_or(value));
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The kinds the kube client lists, read from the sources (a new `list_all` call shows here).
fn listed_kinds() -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for file in ["src/sources/kube.rs", "src/sources/helm.rs"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for (i, _) in text.match_indices("list_all::<") {
            let rest = &text[i + "list_all::<".len()..];
            kinds.insert(rest[..rest.find('>').unwrap()].to_string());
        }
        // `let x: Vec<Kind> = list_all(…)`
        for (i, _) in text.match_indices("> = list_all(") {
            let before = &text[..i];
            let start = before.rfind("Vec<").unwrap() + "Vec<".len();
            kinds.insert(before[start..].to_string());
        }
    }
    kinds.remove("K");
    kinds
}

/// Where a kind lives in the API: (group, resource).
fn resource_of(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Pod" => ("", "pods"),
        "ReplicationController" => ("", "replicationcontrollers"),
        "Secret" => ("", "secrets"),
        "Deployment" => ("apps", "deployments"),
        "StatefulSet" => ("apps", "statefulsets"),
        "DaemonSet" => ("apps", "daemonsets"),
        "ReplicaSet" => ("apps", "replicasets"),
        "Job" => ("batch", "jobs"),
        "CronJob" => ("batch", "cronjobs"),
        other => panic!(
            "the kube client lists {other}: grant it in deploy/base/rbac.yaml and name it here"
        ),
    }
}

#[test]
fn the_cluster_roles_grant_every_list_the_code_makes_and_nothing_more() {
    let kinds = listed_kinds();
    assert!(kinds.len() >= 9, "{kinds:?}");
    for overlay in OVERLAYS {
        let docs = render(overlay);
        let mut granted = BTreeSet::new();
        for role in of_kind(&docs, "ClusterRole") {
            for rule in role["rules"].as_array().unwrap() {
                let verbs: Vec<&str> = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(verbs, ["list"], "{overlay}: only list is needed");
                for group in rule["apiGroups"].as_array().unwrap() {
                    for resource in rule["resources"].as_array().unwrap() {
                        granted.insert((
                            group.as_str().unwrap().to_string(),
                            resource.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
        let needed: BTreeSet<(String, String)> = kinds
            .iter()
            .map(|k| resource_of(k))
            .map(|(g, r)| (g.to_string(), r.to_string()))
            .collect();
        assert_eq!(granted, needed, "{overlay}");
        // Secrets are read only where a RoleBinding says, never cluster-wide.
        for binding in of_kind(&docs, "ClusterRoleBinding") {
            assert_ne!(binding["roleRef"]["name"], "regkeeper-helm-releases");
        }
    }
}

#[test]
fn every_container_runs_locked_down() {
    for overlay in OVERLAYS {
        let docs = render(overlay);
        let pod = &workload(&docs)["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{overlay}"
        );
        assert_eq!(pod["serviceAccountName"], "regkeeper");
        let containers = pod["containers"].as_array().unwrap();
        assert!(containers.iter().any(|c| c["name"] == "git-sync"));
        let git_sync = containers.iter().find(|c| c["name"] == "git-sync").unwrap();
        assert!(
            git_sync["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "--git-config=fetch.writeCommitGraph:true")
        );
        for container in containers {
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{overlay}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{overlay}");
            assert_eq!(security["capabilities"]["drop"][0], "ALL", "{overlay}");
            assert!(container["resources"]["requests"]["memory"].is_string());
        }
    }
}

fn seconds(duration: &str) -> u64 {
    duration.trim_end_matches('s').parse().unwrap()
}

fn shutdown_grace(config: &str) -> u64 {
    let config: Value = serde_saphyr::from_str(config).unwrap();
    seconds(
        config["timeouts"]["shutdownGrace"]
            .as_str()
            .unwrap_or("30s"),
    )
}

#[test]
fn the_shapes_are_what_their_names_say() {
    let single = render("single");
    assert_eq!(workload(&single)["kind"], "StatefulSet");
    assert_eq!(workload(&single)["spec"]["replicas"], 1);
    assert!(named(&single, "Service", "regkeeper-registry").is_some());

    let ha = render("ha");
    let deployment = workload(&ha);
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"]
            == "kubernetes.io/hostname"
    );
    assert_eq!(
        named(&ha, "PodDisruptionBudget", "regkeeper").unwrap()["spec"]["minAvailable"],
        2
    );
    let container = regkeeper_container(deployment);
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > pre_stop + shutdown_grace(&config_text(&ha)),
        "termination grace {grace}s must cover preStop {pre_stop}s and the drain"
    );
    assert!(config_text(&ha).contains("backend: postgres"));

    let sidecar = render("sidecar");
    assert!(named(&sidecar, "Service", "regkeeper-registry").is_none());
    assert!(
        regkeeper_container(workload(&sidecar))["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--no-proxy")
    );

    for docs in [&single, &ha, &sidecar] {
        let admin = named(docs, "Service", "regkeeper-admin").unwrap();
        assert_eq!(admin["spec"]["ports"].as_array().unwrap().len(), 1);
        assert_eq!(admin["spec"]["ports"][0]["port"], 9090);
        // The admin port opens to the monitoring namespace (and, in sidecar mode, the registry).
        let policy = named(docs, "NetworkPolicy", "regkeeper-admin").unwrap();
        for rule in policy["spec"]["ingress"].as_array().unwrap() {
            if rule["ports"][0]["port"] == "admin" {
                assert!(rule["from"].is_array(), "the admin port is open to all");
            }
        }
        let grace = workload(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap();
        assert!(grace > shutdown_grace(&config_text(docs)));
    }
}

#[test]
fn the_prometheus_rule_carries_the_alert_file() {
    let alerts: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/alerts.yaml")).unwrap(),
    )
    .unwrap();
    for overlay in OVERLAYS {
        let docs = render(overlay);
        let rule = named(&docs, "PrometheusRule", "regkeeper").unwrap();
        assert_eq!(rule["spec"]["groups"], alerts["groups"], "{overlay}");
    }
}

/// What the Dockerfile builds (user, ports, paths, environment) is what the overlays run.
#[test]
fn the_dockerfile_agrees_with_the_overlays() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let line = |prefix: &str| {
        dockerfile
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in the Dockerfile"))
            .to_string()
    };
    assert_eq!(line("USER "), "USER 65532:65532");
    assert_eq!(line("EXPOSE "), "EXPOSE 5050 9090");
    assert!(line("CMD ").contains("\"/etc/regkeeper/regkeeper.yaml\""));
    assert!(dockerfile.contains("REGKEEPER_INDEX_PATH=/var/lib/regkeeper/index"));
    for overlay in OVERLAYS {
        let docs = render(overlay);
        let pod = &workload(&docs)["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{overlay}");
        let container = regkeeper_container(workload(&docs));
        let ports: Vec<u64> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [5050, 9090], "{overlay}");
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args.last(), Some(&"/etc/regkeeper/regkeeper.yaml"));
        let mounts = container["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["mountPath"] == "/etc/regkeeper"));
        // The config listens where the container's ports are, and keeps sled where the volume is.
        let config: Value = serde_saphyr::from_str(&config_text(&docs)).unwrap();
        assert_eq!(config["listen"], "0.0.0.0:5050");
        assert_eq!(config["admin"]["listen"], "0.0.0.0:9090");
        if let Some(path) = config["index"]["path"].as_str() {
            assert_eq!(path, "/var/lib/regkeeper/index");
            assert!(
                mounts
                    .iter()
                    .any(|m| m["mountPath"] == "/var/lib/regkeeper"),
                "{overlay}"
            );
        }
    }
}
