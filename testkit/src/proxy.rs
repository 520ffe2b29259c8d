//! A TCP proxy on loopback that a test controls, for network partitions between a
//! process and its peer (e.g. a gateway node and PostgreSQL).

use crate::ports::free_port;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    /// Forward nothing: bytes stay where they are, as with a cable pulled.
    partitioned: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

/// Forwards 127.0.0.1:`port` to 127.0.0.1:`target` until dropped.
pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(State::default());
        let st = state.clone();
        std::thread::spawn(move || {
            while !st.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || connect(st, client, target));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy { port, state }
    }

    /// Stop forwarding in both directions: open connections hang, new ones are accepted
    /// and hang too (no reset, no answer), as in a real partition.
    pub fn partition(&self) {
        self.state.partitioned.store(true, Ordering::SeqCst);
    }

    /// Forward again; what waited goes through.
    pub fn heal(&self) {
        self.state.partitioned.store(false, Ordering::SeqCst);
    }

    /// Cut every open connection (both sides see it closed).
    pub fn cut(&self) {
        for c in self.state.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.partitioned.store(false, Ordering::SeqCst);
        self.cut();
    }
}

fn connect(st: Arc<State>, client: TcpStream, target: u16) {
    while st.partitioned.load(Ordering::SeqCst) && !st.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nonblocking(false);
    {
        let mut conns = st.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| c.peer_addr().is_ok());
        for s in [&client, &upstream] {
            if let Ok(c) = s.try_clone() {
                conns.push(c);
            }
        }
    }
    let (c2, u2) = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return,
    };
    let st2 = st.clone();
    std::thread::spawn(move || pump(st2, c2, u2));
    pump(st, upstream, client);
}

/// Copy `from` → `to` while not partitioned; on end or error close both.
fn pump(st: Arc<State>, mut from: TcpStream, mut to: TcpStream) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if st.stop.load(Ordering::SeqCst) {
            break;
        }
        if st.partitioned.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
