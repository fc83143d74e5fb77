//! The regkeeper binary under test, in front of an upstream, on free loopback ports.

use std::{
    fs,
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
};

use super::process::{Guard, free_port, wait_for_port};

pub struct Regkeeper {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    child: Option<Guard>,
}

impl Regkeeper {
    pub fn start(upstream_url: &str) -> Self {
        Self::start_with(upstream_url, "")
    }

    /// `extra` is appended to the generated config (e.g. a `tls:` or `timeouts:` section).
    pub fn start_with(upstream_url: &str, extra: &str) -> Self {
        Self::start_full(upstream_url, extra, &[])
    }

    /// With `REGKEEPER_*` overrides in the child's environment.
    pub fn start_env(upstream_url: &str, env: &[(&str, &str)]) -> Self {
        Self::start_full(upstream_url, "", env)
    }

    /// Extra config and `REGKEEPER_*` overrides together.
    pub fn start_full(upstream_url: &str, extra: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("regkeeper.yaml");
        fs::write(
            &config,
            format!(
                "listen: {addr}\nupstream:\n  url: {upstream_url}\nadmin:\n  listen: {admin}\nindex:\n  path: {index}\n{log}{extra}",
                index = dir.path().join("index").display(),
                log = if extra.contains("log:") { "" } else { "log:\n  level: debug\n" },
            ),
        )
        .unwrap();
        let log = dir.path().join("regkeeper.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_regkeeper"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn regkeeper");
        wait_for_port(addr, &mut child, "regkeeper", &log);
        Self {
            addr,
            admin,
            dir,
            log,
            child: Some(Guard(child)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `host:port` for `docker://` references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The config file the process was started with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("regkeeper.yaml")
    }

    /// The embedded index directory (open it only after the process has exited).
    pub fn index_path(&self) -> std::path::PathBuf {
        self.dir.path().join("index")
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").0.id()
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill_hard(&mut self) {
        let mut guard = self.child.take().expect("running");
        let _ = guard.0.kill();
        let _ = guard.0.wait();
    }

    /// Waits (up to a minute) for the process to exit by itself; whether it exited successfully.
    pub fn wait(&mut self) -> bool {
        let mut guard = self.child.take().expect("running");
        for _ in 0..600 {
            if let Ok(Some(status)) = guard.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }
}
