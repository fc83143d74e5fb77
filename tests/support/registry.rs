//! A real CNCF Distribution (`docker-registry` 2.8) on a free loopback port.

use std::{
    fs,
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
};

use super::process::{Guard, free_port, require_tool, wait_for_port};

pub struct Registry {
    pub addr: SocketAddr,
    /// `http` or `https` (when started with a certificate).
    pub scheme: &'static str,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Guard>,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// `extra` is appended to the config (e.g. an `auth:` section).
    pub fn start_with(extra: &str) -> Self {
        Self::start_config("warn", extra)
    }

    /// Logging every request it answers (see [`Self::requests`]).
    pub fn start_logging() -> Self {
        Self::start_config("info", "")
    }

    /// Logging every request, with `extra` appended to the config.
    pub fn start_logging_with(extra: &str) -> Self {
        Self::start_config("info", extra)
    }

    /// `(method, path)` of every request answered so far (a registry from `start_logging`).
    pub fn requests(&self) -> Vec<(String, String)> {
        let log = fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        let field = |line: &str, name: &str| {
            line.split(&format!("{name}=")).nth(1).map(|rest| {
                let rest = rest.trim_start_matches('"');
                rest.split(['"', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        };
        log.lines()
            .filter(|l| l.contains("response completed"))
            .filter_map(|l| {
                Some((
                    field(l, "http.request.method")?,
                    field(l, "http.request.uri")?,
                ))
            })
            .collect()
    }

    fn start_config(level: &str, extra: &str) -> Self {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: {level}}}\nstorage:\n  filesystem: {{rootdirectory: {data}}}\n  delete: {{enabled: true}}\n  cache: {{blobdescriptor: inmemory}}\nhttp:\n  addr: {addr}\n  secret: regkeeper-tests\n{extra}",
                data = dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut registry = Self {
            addr,
            scheme: if extra.contains("\n  tls:") || extra.starts_with("  tls:") {
                "https"
            } else {
                "http"
            },
            dir,
            config,
            child: None,
        };
        registry.restart();
        registry
    }

    /// Serving HTTPS with the given PEM certificate and key.
    pub fn start_tls(cert: &str, key: &str) -> Self {
        // Appended right after the `http:` section, so it nests under it.
        Self::start_with(&format!(
            "  tls:\n    certificate: {cert}\n    key: {key}\n"
        ))
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stops the registry process (the port refuses connections afterwards).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Stops it, runs Distribution's offline garbage collection, and starts it again.
    pub fn garbage_collect(&mut self) {
        self.stop();
        let output = Command::new("docker-registry")
            .arg("garbage-collect")
            .arg(&self.config)
            .output()
            .expect("run docker-registry garbage-collect");
        assert!(
            output.status.success(),
            "garbage-collect: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.restart();
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        let log = self.dir.path().join("registry.log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn docker-registry");
        wait_for_port(self.addr, &mut child, "docker-registry", &log);
        self.child = Some(Guard(child));
    }
}
