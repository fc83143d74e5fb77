//! nginx (Debian's `nginx-light`) as the round-robin balancer in front of several replicas:
//! a request whose replica refuses the connection or resets it goes to the next one.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
};

use super::process::{Guard, free_port, wait_for_port};

pub struct Balancer {
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    _child: Guard,
}

impl Balancer {
    pub fn start(backends: &[SocketAddr]) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx (apt-get install nginx-light)");
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let d = dir.path().display();
        let servers: String = backends
            .iter()
            .map(|b| format!("    server {b} max_fails=0;\n"))
            .collect();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let conf = format!(
            r#"{user}
worker_processes 1;
master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream replicas {{
{servers}  }}
  server {{
    listen {addr};
    client_max_body_size 0;
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
      # A replica going away refuses or resets connections it never read a request from:
      # the request goes to the next replica, whatever its method.
      proxy_next_upstream error timeout non_idempotent;
      proxy_next_upstream_tries 3;
    }}
  }}
}}
"#,
            user = if root { "user root;" } else { "" },
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let log = dir.path().join("stderr.log");
        let mut child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(addr, &mut child, "nginx", &log);
        Self {
            addr,
            _dir: dir,
            _child: Guard(child),
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}
