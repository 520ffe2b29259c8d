//! Loopback ports for the servers a test starts.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 for a server a test starts.
///
/// Not bind-to-0: the kernel hands those out from the ephemeral range, where outgoing
/// connections and parallel test processes (nextest) pick the same port again before our
/// server binds it. Instead a port below the ephemeral range is claimed across processes
/// with a marker file (create-new), then checked to be bindable.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let dir = std::env::temp_dir().join("demail-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let mut x = h.finish();
    for _ in 0..2000 {
        // xorshift: a cheap sequence over 20000..32000 without a rand dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20000 + (x % 12000) as u16;
        let claim = dir.join(port.to_string());
        let stale = std::fs::metadata(&claim)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(1800));
        if stale {
            let _ = std::fs::remove_file(&claim);
        }
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&claim).is_err() {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

/// Wait until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
