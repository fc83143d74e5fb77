//! A TCP forwarder on a fixed loopback port that starts closed: connections are refused until
//! [`Gate::open`], then forwarded to the target. Makes "the upstream cannot be reached" and
//! "it is back" a step of a test; [`Gate::cut_after`] makes "the answer was lost" one.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

/// Bytes that, once a client sends them, end its connection (one time).
type Cut = Arc<Mutex<Option<Vec<u8>>>>;

pub struct Gate {
    pub addr: SocketAddr,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    listening: bool,
    cut: Cut,
}

impl Gate {
    /// Closed: nothing listens on `addr` yet.
    pub fn closed(addr: SocketAddr, target: SocketAddr) -> Self {
        Self {
            addr,
            target,
            stop: Arc::new(AtomicBool::new(false)),
            listening: false,
            cut: Cut::default(),
        }
    }

    /// Open, forwarding to `target`.
    pub fn open_to(target: SocketAddr) -> Self {
        let addr = format!("127.0.0.1:{}", super::process::free_port())
            .parse()
            .unwrap();
        let mut gate = Self::closed(addr, target);
        gate.open();
        gate
    }

    /// The next time a client sends `pattern`, it is passed on and the client's connection is
    /// cut at once: the target acts on it, and its answer finds the connection gone.
    pub fn cut_after(&self, pattern: &[u8]) {
        *self.cut.lock().unwrap() = Some(pattern.to_vec());
    }

    /// Whether an armed cut is still waiting for its pattern.
    pub fn cut_pending(&self) -> bool {
        self.cut.lock().unwrap().is_some()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts forwarding.
    pub fn open(&mut self) {
        let listener = TcpListener::bind(self.addr).unwrap();
        let (target, stop, cut) = (self.target, self.stop.clone(), self.cut.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                forward(&client, &server, cut.clone());
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

/// Copies the client's bytes to the server, cutting the client off after an armed pattern.
fn forward(client: &TcpStream, server: &TcpStream, cut: Cut) {
    let (Ok(mut from), Ok(mut to)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read) = from.read(&mut buffer) {
            if read == 0 || to.write_all(&buffer[..read]).is_err() {
                break;
            }
            let mut armed = cut.lock().unwrap();
            let hit = armed
                .as_ref()
                .is_some_and(|p| buffer[..read].windows(p.len()).any(|w| w == p.as_slice()));
            if hit {
                *armed = None;
                drop(armed);
                let _ = from.shutdown(Shutdown::Both);
                // The target still gets to act on what it was sent.
                thread::sleep(Duration::from_millis(300));
                break;
            }
        }
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
