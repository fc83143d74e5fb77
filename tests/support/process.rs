use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Output},
    thread::sleep,
    time::{Duration, Instant},
};

/// `--name N` from the command line (benchmarks), or `default`.
#[allow(dead_code)] // benchmarks only
pub fn usize_arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Fails the test with a clear message when a tool the tests need is missing.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed; run .ci/run (it installs docker-registry, skopeo and umoci)"
    );
}

/// Waits until something accepts TCP connections on `addr`, or the child exits.
pub fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {addr}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr} within 30s");
}

/// Runs a command to completion and returns its output, failing with stderr when it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("spawn command");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A child that is killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `done` every `every` until it holds; fails the test with `why()` after `within`.
pub fn wait_until(
    within: std::time::Duration,
    every: std::time::Duration,
    mut done: impl FnMut() -> bool,
    why: impl Fn() -> String,
) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{}", why());
        std::thread::sleep(every);
    }
}
