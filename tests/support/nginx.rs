//! nginx (Debian's `nginx-light`) as a test part: the capacity bench's rival and static
//! upstream, and the balancer in front of several replicas.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
};

use super::process::{Guard, wait_for_port};

/// nginx with `conf` written into `dir`, once it listens on `ready`.
pub fn spawn_nginx(
    binary: &str,
    dir: &std::path::Path,
    conf: &str,
    ready: SocketAddr,
) -> Option<Guard> {
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let log = dir.join("stderr.log");
    let mut child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .ok()?;
    wait_for_port(ready, &mut child, "nginx", &log);
    Some(Guard(child))
}

/// What every nginx here shares: one process that is the worker (killing it by its handle
/// leaves no orphaned workers), files under `d`, long keep-alive; the `http` block left open.
pub fn nginx_head(d: &str, access_log: &str) -> String {
    let user = if running_as_root() { "user root;" } else { "" };
    format!(
        r#"{user}
worker_processes 1;
master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {access_log};
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;"#
    )
}

pub fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
