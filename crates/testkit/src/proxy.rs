//! A TCP fault proxy in front of one node's inter-node listener: it relays
//! connections and can refuse and cut those from chosen source addresses
//! (network partitions on plain loopback, where every node has its own
//! 127.0.0.x address and calls out from it).
//!
//! Threads and blocking sockets only: every relay ends when either side
//! closes or when its source is cut.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Shared {
    /// `None` while the proxy plays a stopped process (connections refused).
    listener: Mutex<Option<TcpListener>>,
    /// Sources whose connections are refused and cut.
    blocked: Mutex<HashSet<IpAddr>>,
    /// Live relays: (source, both sockets) so a cut can close them.
    live: Mutex<Vec<(IpAddr, TcpStream, TcpStream)>>,
    stop: AtomicBool,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 for any) and relays to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(listen).expect("bind fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let shared = Arc::new(Shared::default());
        *shared.listener.lock().expect("proxy lock") = Some(listener);
        let s = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(target, &s));
        FaultProxy { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Refuses new connections from `source` and cuts its open ones.
    pub fn block(&self, source: IpAddr) {
        self.shared
            .blocked
            .lock()
            .expect("proxy lock")
            .insert(source);
        let mut live = self.shared.live.lock().expect("proxy lock");
        live.retain(|(src, a, b)| {
            if *src == source {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Lets every source through again.
    pub fn unblock_all(&self) {
        self.shared.blocked.lock().expect("proxy lock").clear();
    }

    /// Stops listening and cuts every relay: connections are refused, as
    /// they are at the address of a process that died.
    pub fn close(&self) {
        self.shared.listener.lock().expect("proxy lock").take();
        for (_, a, b) in self.shared.live.lock().expect("proxy lock").drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same address after [`Self::close`].
    pub fn reopen(&self) {
        let mut slot = self.shared.listener.lock().expect("proxy lock");
        if slot.is_some() {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "rebind {}: {e}",
                        self.addr
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        listener.set_nonblocking(true).expect("non-blocking accept");
        *slot = Some(listener);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, a, b) in self.shared.live.lock().expect("proxy lock").drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(target: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = match shared.listener.lock().expect("proxy lock").as_ref() {
            Some(l) => l.accept(),
            None => Err(std::io::Error::from(std::io::ErrorKind::WouldBlock)),
        };
        let (client, peer) = match accepted {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        let source = peer.ip();
        if shared.blocked.lock().expect("proxy lock").contains(&source) {
            drop(client);
            continue;
        }
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            drop(client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        if let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) {
            shared
                .live
                .lock()
                .expect("proxy lock")
                .push((source, c3, s3));
        }
        std::thread::spawn(move || relay(client, s2));
        std::thread::spawn(move || relay(server, c2));
    }
}

/// Copies `from` to `to` until either side ends.
fn relay(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
