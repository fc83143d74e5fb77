//! A TCP forwarder on a fixed loopback port that starts closed: connections are refused until
//! [`Gate::open`], then forwarded to the target. Makes "the upstream cannot be reached" and
//! "it is back" a step of a test.

use std::{
    io,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

pub struct Gate {
    pub addr: SocketAddr,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    listening: bool,
}

impl Gate {
    /// Closed: nothing listens on `addr` yet.
    pub fn closed(addr: SocketAddr, target: SocketAddr) -> Self {
        Self {
            addr,
            target,
            stop: Arc::new(AtomicBool::new(false)),
            listening: false,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts forwarding.
    pub fn open(&mut self) {
        let listener = TcpListener::bind(self.addr).unwrap();
        let (target, stop) = (self.target, self.stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        self.listening = true;
    }
}

/// Copies `from` into `to` on a thread of its own, then half-closes `to`.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.listening {
            // Wakes the accept loop so it sees the flag.
            let _ = TcpStream::connect(self.addr);
        }
    }
}
