//! nginx as the round-robin balancer in front of several replicas: a request whose replica
//! refuses the connection or resets it goes to the next one.

use std::net::SocketAddr;

use super::{
    nginx::{nginx_binary, nginx_head, spawn_nginx},
    process::{Guard, free_port},
};

pub struct Balancer {
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    _child: Guard,
}

impl Balancer {
    pub fn start(backends: &[SocketAddr]) -> Self {
        let binary = nginx_binary().expect("nginx (apt-get install nginx-light)");
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let d = dir.path().display().to_string();
        let servers: String = backends
            .iter()
            .map(|b| format!("    server {b} max_fails=0;\n"))
            .collect();
        let conf = format!(
            r#"{head}
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
            head = nginx_head(&d, &format!("{d}/access.log")),
        );
        let child = spawn_nginx(binary, dir.path(), &conf, addr).expect("nginx starts");
        Self {
            addr,
            _dir: dir,
            _child: child,
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}
