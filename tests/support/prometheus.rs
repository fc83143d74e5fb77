//! A real Prometheus (Debian's `prometheus`, 2.x) on a free loopback port, scraping the given
//! targets every second, with deploy/monitoring/alerts.yaml loaded.

use std::{
    fs,
    net::SocketAddr,
    process::{Command, Stdio},
};

use super::process::{Guard, free_port, require_tool, wait_for_port};

pub struct Prometheus {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    _child: Guard,
}

impl Prometheus {
    pub fn start(targets: &[SocketAddr]) -> Self {
        require_tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let rules =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring/alerts.yaml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: regkeeper\n    static_configs:\n      - targets: [{targets}]\n",
                rules = rules.display(),
                targets = targets.join(", ")
            ),
        )
        .unwrap();
        let log = dir.path().join("prometheus.log");
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prometheus");
        wait_for_port(addr, &mut child, "prometheus", &log);
        Self {
            addr,
            dir,
            _child: Guard(child),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}
