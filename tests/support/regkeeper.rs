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
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_at(addr, upstream_url, extra, env)
    }

    /// Listening on `addr` (a replica restarted where the balancer expects it).
    pub fn start_at(
        addr: SocketAddr,
        upstream_url: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::spawn(addr, admin, upstream_url, extra, env, false)
    }

    /// `serve --no-proxy` next to the upstream, its admin listener on `admin` (which the
    /// registry's notifications were pointed at before it started).
    pub fn start_sidecar(
        admin: SocketAddr,
        upstream_url: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::spawn(addr, admin, upstream_url, extra, env, true)
    }

    fn spawn(
        addr: SocketAddr,
        admin: SocketAddr,
        upstream_url: &str,
        extra: &str,
        env: &[(&str, &str)],
        sidecar: bool,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("regkeeper.yaml");
        fs::write(
            &config,
            format!(
                "listen: {addr}\nupstream:\n  url: {upstream_url}\nadmin:\n  listen: {admin}\nindex:\n  path: {index}\n{log}{sync}{extra}",
                index = dir.path().join("index").display(),
                // Periodic sync would record direct pushes behind a test's back; tests of it
                // configure it themselves.
                sync = if extra.contains("sync:") { "" } else { "sync:\n  interval: 0s\n" },
                log = if extra.contains("log:") { "" } else { "log:\n  level: debug\n" },
            ),
        )
        .unwrap();
        let log = dir.path().join("regkeeper.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_regkeeper"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(sidecar.then_some("--no-proxy"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn regkeeper");
        wait_for_port(
            if sidecar { admin } else { addr },
            &mut child,
            "regkeeper",
            &log,
        );
        Self {
            addr,
            admin,
            dir,
            log,
            child: Some(Guard(child)),
        }
    }

    /// `regkeeper ARGS --config <this instance's config>` run to completion.
    pub fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Cli {
        run_cli(&self.config_path(), args, env)
    }

    /// Polls `GET path` on the admin listener until `ready` holds for its JSON (or 60 s pass,
    /// which fails the test with the last answer).
    pub async fn admin_until(
        &self,
        path: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let client = super::http::HttpClient::default();
        let url = format!("http://{}{path}", self.admin);
        let mut last = String::new();
        for _ in 0..600 {
            if let Some(answer) = client
                .try_send(::http::Method::GET, &url, &[], super::http::empty())
                .await
            {
                if answer.status == 200 {
                    let value = answer.json();
                    if ready(&value) {
                        return value;
                    }
                }
                last = format!(
                    "{} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "{path} never became ready; last answer: {last}\n{}",
            self.logs()
        );
    }

    /// `GET path` on the admin listener: (status, body).
    pub fn admin_text(&self, path: &str) -> (u16, String) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answer = runtime.block_on(
            super::http::HttpClient::default().get(&format!("http://{}{path}", self.admin), &[]),
        );
        (
            answer.status.as_u16(),
            String::from_utf8_lossy(&answer.body).into_owned(),
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A raw client socket to the proxy, for tests that write requests byte by byte; a read
    /// that waits 30 s fails rather than hanging the test.
    pub fn raw_connection(&self) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        stream
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

    /// Sends `signal` (`STOP`, `CONT`, …).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
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

/// What a CLI run printed.
pub struct Cli {
    pub ok: bool,
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    /// Stdout, after asserting success.
    pub fn expect_ok(self) -> String {
        assert!(
            self.ok,
            "regkeeper failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self.stdout
    }
}

/// `regkeeper ARGS --config CONFIG` run to completion (with `REGKEEPER_*` overrides in `env`).
pub fn run_cli(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Cli {
    let output = Command::new(env!("CARGO_BIN_EXE_regkeeper"))
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .expect("run regkeeper");
    Cli {
        ok: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A config for CLI commands (like `sync`) against `upstream_url`, with its index in `dir`.
pub fn cli_config(dir: &std::path::Path, upstream_url: &str, extra: &str) -> PathBuf {
    let path = dir.join("regkeeper-cli.yaml");
    fs::write(
        &path,
        format!(
            "upstream:\n  url: {upstream_url}\nindex:\n  path: {}\n{log}{extra}",
            dir.join("index").display(),
            log = if extra.contains("log:") {
                ""
            } else {
                "log:\n  level: info\n"
            },
        ),
    )
    .unwrap();
    path
}

/// One cleanup run in this process against `config`'s upstream, over `index` (which the test
/// filled), as `regkeeper apply --mode MODE` would run it.
pub fn run_cleanup<I: regkeeper::index::Index + 'static>(
    runtime: &tokio::runtime::Runtime,
    config: &regkeeper::config::Config,
    index: &std::sync::Arc<I>,
    mode: regkeeper::config::CleanupMode,
) -> regkeeper::cleanup::RunReport {
    let tls = regkeeper::tls::client_for_upstream(config).unwrap();
    let client = regkeeper::registry::RegistryClient::new(config, tls).unwrap();
    let leadership = regkeeper::backend::leadership(config, index.clone());
    let report = runtime
        .block_on(regkeeper::cleanup::run_once(
            config,
            regkeeper::planning::Source::Index(index.as_ref()),
            index.as_ref(),
            &client,
            &leadership,
            mode,
            false,
        ))
        .unwrap();
    leadership.resign();
    report
}
