//! Limits shared by all connections of a listener: concurrent connections per client
//! address, and AUTH failures per client address and per user name with back-off.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A client address as counted: IPv4-mapped IPv6 counts as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Concurrent connections per client address.
#[derive(Default)]
pub(crate) struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted for its address; dropped when it ends.
pub(crate) struct IpSlot {
    ip: IpAddr,
    of: Arc<PerIp>,
}

impl PerIp {
    /// A slot, or `None` when `ip` already has `max` connections.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let ip = canonical(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(IpSlot { ip, of: self.clone() })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// When AUTH failures lock a client address or a user name out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Failures from one client address before it is locked out.
    pub per_ip: u32,
    /// Failures for one user name before it is locked out, except for addresses from
    /// which it logged in successfully during the last day (so that guessing someone's
    /// name does not lock out the mail server that uses the account every minute).
    pub per_user: u32,
    /// The first lock; it doubles with every further failure, up to `lockout_max`.
    /// A counter is forgotten `lockout_max` after its last failure.
    pub lockout: Duration,
    pub lockout_max: Duration,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits { per_ip: 5, per_user: 10, lockout: Duration::from_secs(60), lockout_max: Duration::from_secs(3600) }
    }
}

#[derive(Clone, Copy)]
struct Counter {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// How long a successful login makes a (user, address) pair known.
const KNOWN_FOR: Duration = Duration::from_secs(86_400);
/// Entries kept per map; beyond it the stalest go (a flood of made-up names).
const MAX_ENTRIES: usize = 50_000;

#[derive(Default)]
struct State {
    ips: HashMap<IpAddr, Counter>,
    users: HashMap<String, Counter>,
    known: HashMap<(String, IpAddr), Instant>,
}

/// AUTH failure counters of a listener, shared by its connections (in
/// [`crate::Config::auth_throttle`]).
pub struct AuthThrottle {
    limits: AuthLimits,
    state: Mutex<State>,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle::new(AuthLimits::default())
    }
}

impl AuthThrottle {
    pub fn new(limits: AuthLimits) -> AuthThrottle {
        AuthThrottle { limits, state: Mutex::new(State::default()) }
    }

    pub fn limits(&self) -> AuthLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before a password is checked: how long the address or the user name is still
    /// locked out, if it is.
    pub fn locked(&self, ip: IpAddr, user: &str) -> Option<Duration> {
        let (ip, user) = (canonical(ip), user.to_lowercase());
        let now = Instant::now();
        let st = self.lock();
        let left = |c: Option<&Counter>| c.and_then(|c| c.locked_until).and_then(|u| u.checked_duration_since(now));
        let known = st.known.get(&(user.clone(), ip)).is_some_and(|t| now.duration_since(*t) < KNOWN_FOR);
        let by_user = if known { None } else { left(st.users.get(&user)) };
        match (left(st.ips.get(&ip)), by_user) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// A failed login; returns the lock it started, if any (for the log).
    pub fn failed(&self, ip: IpAddr, user: Option<&str>) -> Option<Duration> {
        let (ip, now) = (canonical(ip), Instant::now());
        let limits = self.limits;
        let mut st = self.lock();
        let st = &mut *st;
        let mut started = bump(&mut st.ips, ip, limits.per_ip, &limits, now);
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            let by_user = bump(&mut st.users, u.to_lowercase(), limits.per_user, &limits, now);
            started = started.max(by_user);
        }
        prune(&mut st.ips, &limits, now);
        prune(&mut st.users, &limits, now);
        started
    }

    /// A successful login: the address starts afresh and the pair is known. The name's
    /// counter stays: a user logging in elsewhere must not reset someone's guessing.
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        let (ip, user, now) = (canonical(ip), user.to_lowercase(), Instant::now());
        let mut st = self.lock();
        st.ips.remove(&ip);
        st.known.insert((user, ip), now);
        if st.known.len() > MAX_ENTRIES {
            st.known.retain(|_, t| now.duration_since(*t) < KNOWN_FOR);
        }
    }
}

/// One more failure for `key`; at `threshold` and beyond, a lock of `lockout` doubled per
/// failure past the threshold, at most `lockout_max`.
fn bump<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Counter>,
    key: K,
    threshold: u32,
    limits: &AuthLimits,
    now: Instant,
) -> Option<Duration> {
    let c = map.entry(key).or_insert(Counter { failures: 0, last: now, locked_until: None });
    if now.duration_since(c.last) >= limits.lockout_max {
        *c = Counter { failures: 0, last: now, locked_until: None };
    }
    c.failures += 1;
    c.last = now;
    if c.failures < threshold.max(1) {
        return None;
    }
    let doublings = (c.failures - threshold.max(1)).min(20);
    let lock = limits.lockout.saturating_mul(1 << doublings).min(limits.lockout_max);
    c.locked_until = Some(now + lock);
    Some(lock)
}

/// Forget counters whose last failure is `lockout_max` ago; keep the map bounded.
fn prune<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, Counter>, limits: &AuthLimits, now: Instant) {
    if map.len() <= MAX_ENTRIES {
        return;
    }
    map.retain(|_, c| now.duration_since(c.last) < limits.lockout_max);
    if map.len() > MAX_ENTRIES {
        let mut by_age: Vec<(K, Instant)> = map.iter().map(|(k, c)| (k.clone(), c.last)).collect();
        by_age.sort_by_key(|(_, t)| *t);
        for (k, _) in by_age.into_iter().take(map.len() - MAX_ENTRIES) {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_per_address_are_capped_and_released() {
        let p = Arc::new(PerIp::default());
        let a = p.acquire(ip("127.0.0.1"), 2).unwrap();
        let _b = p.acquire(ip("::ffff:127.0.0.1"), 2).unwrap();
        assert!(p.acquire(ip("127.0.0.1"), 2).is_none(), "a mapped address counts as the same");
        assert!(p.acquire(ip("127.0.0.2"), 2).is_some());
        drop(a);
        assert!(p.acquire(ip("127.0.0.1"), 2).is_some());
    }

    #[test]
    fn failures_lock_the_address_and_the_name_with_back_off() {
        let t = AuthThrottle::new(AuthLimits {
            per_ip: 3,
            per_user: 5,
            lockout: Duration::from_secs(10),
            lockout_max: Duration::from_secs(35),
        });
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        t.succeeded(c, "Helper");
        assert_eq!(t.failed(a, Some("helper")), None);
        assert_eq!(t.failed(a, Some("helper")), None);
        assert_eq!(t.failed(a, Some("helper")), Some(Duration::from_secs(10)));
        assert!(t.locked(a, "anyone").is_some(), "the address is locked for every name");
        assert_eq!(t.locked(b, "helper"), None, "another address is not");
        // Further failures double the lock, up to the maximum.
        assert_eq!(t.failed(a, None), Some(Duration::from_secs(20)));
        assert_eq!(t.failed(a, None), Some(Duration::from_secs(35)));
        // The name: its fifth failure (from anywhere) locks it, except where it is known.
        t.failed(b, Some("helper"));
        t.failed(b, Some("HELPER"));
        assert!(t.locked(b, "helper").is_some());
        assert!(t.locked(ip("10.0.0.9"), "helper").is_some());
        assert_eq!(t.locked(c, "helper"), None, "the address it logged in from before");
        // A success (with the lock over, or from a known address) clears its address only.
        t.succeeded(c, "helper");
        t.failed(c, Some("other"));
        assert_eq!(t.locked(c, "other"), None);
        assert!(t.locked(ip("10.0.0.9"), "helper").is_some(), "the name stays locked for strangers");
    }
}
