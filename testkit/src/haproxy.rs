//! HAProxy from Debian in TCP mode in front of gateway nodes, speaking PROXY protocol v2
//! to them (also on its health checks), as `docs/deployment.md` sets it up.

use crate::ports::{free_port, wait_for_port};
use crate::process::{have, ChildGuard};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub struct Haproxy {
    /// The balanced SMTP address clients use (127.0.0.1).
    pub port: u16,
    _guard: ChildGuard,
}

impl Haproxy {
    /// Balance 127.0.0.1:`port` over the nodes' SMTP ports (round robin). A node that
    /// stops answering is taken out after one failed check (every 200 ms); a connection
    /// to a dead node is sent to another one (`option redispatch`).
    pub fn start(dir: &Path, nodes: &[u16]) -> Result<Haproxy, String> {
        let bin = "/usr/sbin/haproxy";
        if !have(bin) {
            return Err("haproxy fehlt / missing: run scripts/setup test".into());
        }
        let dir = dir.join("haproxy");
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = free_port();
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "  server gw{} 127.0.0.1:{p} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 2\n",
                    i + 1
                )
            })
            .collect();
        let cfg = format!(
            "global\n  maxconn 2000\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n  retries 3\n  option redispatch\n\
             frontend smtp\n  bind 127.0.0.1:{port}\n  default_backend gateways\n\
             backend gateways\n  balance roundrobin\n  source 127.0.0.1\n{servers}"
        );
        let conf = dir.join("haproxy.cfg");
        fs::write(&conf, cfg).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        // -db: stay in the foreground (the guard stops it).
        cmd.arg("-db").arg("-f").arg(&conf);
        let guard = ChildGuard::spawn("haproxy", cmd, Some(&dir.join("haproxy.log"))).map_err(|e| e.to_string())?;
        if !wait_for_port(port, Duration::from_secs(10)) {
            return Err(format!(
                "haproxy did not start: {}",
                fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
            ));
        }
        Ok(Haproxy { port, _guard: guard })
    }
}
