//! Child processes of a test: started, killed on drop; programs on PATH; polling.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Poll `f` until it returns `Some` or the timeout passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    pub name: String,
}

impl ChildGuard {
    /// Start `cmd`; stdout and stderr go to `log` when given, else are discarded.
    pub fn spawn(name: &str, mut cmd: Command, log: Option<&Path>) -> std::io::Result<ChildGuard> {
        match log {
            Some(p) => {
                let f = fs::OpenOptions::new().create(true).append(true).open(p)?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        cmd.stdin(Stdio::null());
        let child = cmd.spawn()?;
        Ok(ChildGuard { child: Some(child), name: name.to_string() })
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL now (a crash, not a shutdown) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Polite stop: SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let end = Instant::now() + grace;
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Has the process exited? Returns its status if so.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Is `program` on PATH (or an existing absolute path)?
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false)
}

/// As root, the services below drop to `nobody`, which must reach `dir`: open it for traversal.
pub(crate) fn open_for_nobody(dir: &Path, writable: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if whoami().1 == 0 {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        let _ = fs::set_permissions(writable, fs::Permissions::from_mode(0o777));
    }
}

pub(crate) fn whoami() -> (String, u32, u32, String) {
    let out = |args: &[&str]| {
        Command::new("id")
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let user = out(&["-un"]);
    let uid = out(&["-u"]).parse().unwrap_or(0);
    let gid = out(&["-g"]).parse().unwrap_or(0);
    let group = out(&["-gn"]);
    (user, uid, gid, group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_kills_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut g = ChildGuard::spawn("sleep", cmd, None).unwrap();
        assert!(g.try_wait().is_none());
        g.kill();
        assert!(g.id() == 0);
    }
}
