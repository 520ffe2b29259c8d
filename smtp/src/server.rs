//! The connection loop: smtp-proto parses, this file decides and answers.

use crate::data::{DataFault, StrictData};
use crate::limits::{AuthThrottle, PerIp};
use crate::reply::{bilingual, Accepted, Reject};
use base64::Engine;
use ipnet::IpNet;
use smtp_proto::request::receiver::{LineReceiver, RequestReceiver};
use smtp_proto::{EhloResponse, Error as ProtoError, Request};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Server settings. [`Config::default`] is a plain SMTP server on no TLS that
/// accepts everyone; set TLS, AUTH and the allow-list for real use.
#[derive(Clone)]
pub struct Config {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// Speak LMTP (LHLO, one reply per recipient after DATA) instead of SMTP.
    pub lmtp: bool,
    /// Certificate for STARTTLS or implicit TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS from the first byte (port 465/1465 style) instead of STARTTLS.
    pub implicit_tls: bool,
    /// Refuse MAIL until the session is encrypted.
    pub require_tls: bool,
    /// Offer AUTH: PLAIN/LOGIN (checked by [`Handler::authenticate`], unless
    /// `password_auth` is off) and the mechanisms of [`Handler::sasl_mechanisms`].
    pub offer_auth: bool,
    /// Offer PLAIN and LOGIN (a gateway with Kerberos only turns this off).
    pub password_auth: bool,
    /// Refuse MAIL until the client has authenticated.
    pub require_auth: bool,
    /// Allow AUTH on an unencrypted session (tests only; passwords travel in clear).
    pub allow_auth_without_tls: bool,
    /// Client networks allowed to connect; empty allows all.
    pub allowed_clients: Vec<IpNet>,
    /// Load balancers whose connections start with a PROXY protocol v2 header: for them,
    /// the client address (for `allowed_clients`, limits and logs) is the header's.
    /// Connections from elsewhere are taken as they are; a header there is not trusted.
    pub proxy_from: Vec<IpNet>,
    /// Largest message in bytes (SIZE extension; larger ones get 552).
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Longest wait for the next command line.
    pub command_timeout: Duration,
    /// Longest wait for the next chunk of message data.
    pub data_timeout: Duration,
    /// Longest whole session.
    pub session_timeout: Duration,
    /// Protocol errors before the server hangs up.
    pub max_errors: usize,
    pub max_connections: usize,
    /// Concurrent connections from one client address (within `max_connections`).
    pub max_connections_per_ip: usize,
    /// Longest wait for the next command (and for the TLS handshake) while the client
    /// has neither authenticated nor given MAIL: an idle stranger should not hold a slot
    /// for the whole `command_timeout`.
    pub pre_auth_timeout: Duration,
    /// AUTH failure counters, per client address and per user name, shared by every
    /// connection that uses this configuration.
    pub auth_throttle: Arc<AuthThrottle>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".into(),
            lmtp: false,
            tls: None,
            implicit_tls: false,
            require_tls: false,
            offer_auth: false,
            password_auth: true,
            require_auth: false,
            allow_auth_without_tls: false,
            allowed_clients: Vec::new(),
            proxy_from: Vec::new(),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            session_timeout: Duration::from_secs(1800),
            max_errors: 20,
            max_connections: 200,
            max_connections_per_ip: 20,
            pre_auth_timeout: Duration::from_secs(30),
            auth_throttle: Arc::new(AuthThrottle::default()),
        }
    }
}

/// What is known about the client when a hook runs.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub client: SocketAddr,
    /// The EHLO/HELO/LHLO argument.
    pub helo: String,
    pub tls: bool,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
    /// How they signed in ([`Authenticated::method`]).
    pub auth_method: Option<String>,
    /// SHA-256 of the client certificate presented in the TLS handshake, if any.
    pub client_cert: Option<[u8; 32]>,
}

/// Who signed in, as the application decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The identity the session carries from now on (a login, a Kerberos principal).
    pub user: String,
    /// How, in the application's own word (`password`, `kerberos`, …).
    pub method: String,
    /// Shown in the 235 reply (e.g. the person's name); `user` when absent.
    pub display: Option<String>,
}

/// The answer to a sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    Accepted(Authenticated),
    /// Wrong credentials: 535, and it counts as a failed attempt.
    Refused,
    /// Cannot be decided now (the directory is down): this reply, 454 4.7.0 as a rule.
    /// Not a failed attempt; the client tries again later.
    Unavailable(Reject),
}

/// The next move in a SASL exchange the application runs.
pub enum SaslStep {
    /// Send this challenge (`334 <base64>`) and wait for the client's response.
    Challenge(Vec<u8>),
    Finished(AuthResult),
}

/// One exchange of a SASL mechanism the application implements (e.g. GSSAPI).
pub trait SaslExchange: Send {
    /// Take the client's (decoded) response; the first call gets the initial response,
    /// or nothing when the client sent none.
    fn step<'a>(&'a mut self, response: &'a [u8]) -> Pin<Box<dyn Future<Output = SaslStep> + Send + 'a>>;
}

/// One transaction: who sends to whom.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub session: SessionInfo,
    /// Reverse path; empty for bounces (`MAIL FROM:<>`).
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}

/// The application side of the server. Only [`Handler::deliver`] is required.
pub trait Handler: Send + Sync + 'static {
    /// Check AUTH PLAIN/LOGIN credentials. The default refuses everyone.
    fn authenticate(&self, _user: &str, _password: &str) -> impl Future<Output = AuthResult> + Send {
        async { AuthResult::Refused }
    }

    /// SASL mechanisms beyond PLAIN and LOGIN the application runs itself, as
    /// smtp-proto `AUTH_*` bits (e.g. `AUTH_GSSAPI`).
    fn sasl_mechanisms(&self) -> u64 {
        0
    }

    /// After the TLS handshake: a client certificate the application recognises signs the
    /// session in without AUTH (the organisation's mail server as a connector).
    fn tls_identity(&self, _session: &SessionInfo) -> Option<Authenticated> {
        None
    }

    /// Start an exchange for one of [`Handler::sasl_mechanisms`].
    fn sasl_start(&self, _mechanism: u64, _session: &SessionInfo) -> Option<Box<dyn SaslExchange>> {
        None
    }

    /// Accept or refuse a reverse path.
    fn mail_from(&self, _session: &SessionInfo, _from: &str) -> Result<(), Reject> {
        Ok(())
    }

    /// Accept or refuse one recipient; `envelope` holds the recipients so far.
    fn rcpt_to(&self, _envelope: &Envelope, _rcpt: &str) -> Result<(), Reject> {
        Ok(())
    }

    /// Take responsibility for a message. Return `Ok` only once it is durably
    /// stored (fsynced): the client gets 250 and forgets the message.
    fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> impl Future<Output = Result<Accepted, Reject>> + Send;
}

/// Accept connections until the listener fails; each connection runs in its own task.
pub async fn serve<H: Handler>(listener: TcpListener, config: Arc<Config>, handler: Arc<H>) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::default());
    loop {
        let (mut stream, mut peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (config, handler, slots, per_ip) = (config.clone(), handler.clone(), slots.clone(), per_ip.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if config.proxy_from.iter().any(|n| n.contains(&peer.ip())) {
                match crate::proxy::read_v2(&mut stream, config.pre_auth_timeout).await {
                    Ok(Some(client)) => {
                        debug!(balancer = %peer, client = %client, "PROXY v2");
                        peer = client;
                    }
                    Ok(None) => debug!(balancer = %peer, "PROXY v2 LOCAL (health check)"),
                    Err(e) => {
                        warn!(balancer = %peer, error = %e, "connection from a balancer without a valid PROXY v2 header closed");
                        return;
                    }
                }
            }
            let permit = slots.try_acquire_owned();
            let ip_slot = per_ip.acquire(peer.ip(), config.max_connections_per_ip);
            let slot = match (&permit, &ip_slot) {
                (Err(_), _) => Slot::Full,
                (Ok(_), None) => Slot::IpFull,
                (Ok(_), Some(_)) => Slot::Free,
            };
            handle(stream, peer, config, handler, slot).await;
            drop((permit, ip_slot));
        });
    }
}

/// Run one SMTP session on an already accepted stream (a TCP connection after a PROXY
/// header, or an in-memory stream in the fuzzer). No connection limit applies here.
pub async fn serve_connection<S, H>(stream: S, peer: SocketAddr, config: Arc<Config>, handler: Arc<H>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    handle(stream, peer, config, handler, Slot::Free).await
}

/// Whether a new connection may be served.
enum Slot {
    Free,
    /// `max_connections` reached.
    Full,
    /// `max_connections_per_ip` reached for this client address.
    IpFull,
}

async fn handle<S, H>(mut stream: S, peer: SocketAddr, config: Arc<Config>, handler: Arc<H>, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let deadline = Instant::now() + config.session_timeout;
    let write_timeout = config.command_timeout;
    let early = |code, esc, de: &str, en: &str| bilingual(code, esc, de, en);
    let refuse = match slot {
        Slot::Free => None,
        Slot::Full => {
            warn!(client = %peer, max = config.max_connections, "connection refused: too many connections");
            Some(early(
                421,
                "4.3.2",
                "Zu viele Verbindungen, bitte später erneut versuchen.",
                "Too many connections, try again later.",
            ))
        }
        Slot::IpFull => {
            warn!(client = %peer, max = config.max_connections_per_ip, "connection refused: too many connections from this address");
            Some(early(
                421,
                "4.7.0",
                "Zu viele gleichzeitige Verbindungen von Ihrer Adresse, bitte später erneut versuchen.",
                "Too many concurrent connections from your address, try again later.",
            ))
        }
    };
    if let Some(msg) = refuse {
        let _ = tokio::time::timeout(write_timeout, stream.write_all(&msg)).await;
        return;
    }
    if !config.allowed_clients.is_empty() && !config.allowed_clients.iter().any(|n| n.contains(&peer.ip())) {
        info!(client = %peer, "client not on allow-list");
        let msg = early(
            554,
            "5.7.1",
            "Ihre Adresse darf diesen Server nicht benutzen.",
            "Your address may not use this server.",
        );
        let _ = tokio::time::timeout(write_timeout, stream.write_all(&msg)).await;
        return;
    }
    debug!(client = %peer, "connected");
    let info = SessionInfo {
        client: peer,
        helo: String::new(),
        tls: false,
        auth_user: None,
        auth_method: None,
        client_cert: None,
    };
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    // A handshake comes before any login: the short pre-auth wait applies.
    let handshake_timeout = config.pre_auth_timeout.min(config.command_timeout);
    if config.implicit_tls {
        let Some(acc) = tls else {
            warn!("implicit TLS without a certificate");
            return;
        };
        match tokio::time::timeout(handshake_timeout, acc.accept(stream)).await {
            Ok(Ok(s)) => {
                let info = after_handshake(&*handler, info, s.get_ref().1);
                let mut st = Session::new(config.clone(), handler, info, deadline);
                let _ = st.run(s, true).await;
            }
            Ok(Err(e)) => info!(client = %peer, error = %e, "TLS handshake failed"),
            Err(_) => info!(client = %peer, "TLS handshake timed out"),
        }
        return;
    }
    let mut st = Session::new(config.clone(), handler.clone(), info.clone(), deadline);
    if let Ok(Some(stream)) = st.run(stream, true).await {
        let Some(acc) = tls else { return };
        match tokio::time::timeout(handshake_timeout, acc.accept(stream)).await {
            Ok(Ok(s)) => {
                // RFC 3207: forget everything learned before the handshake.
                let info = after_handshake(&*handler, info, s.get_ref().1);
                let mut st = Session::new(config, handler, info, deadline);
                let _ = st.run(s, false).await;
            }
            Ok(Err(e)) => info!(client = %peer, error = %e, "STARTTLS handshake failed"),
            Err(_) => info!(client = %peer, "STARTTLS handshake timed out"),
        }
    }
}

/// The session as TLS leaves it: encrypted, with the client certificate's fingerprint,
/// and signed in when the application recognises that certificate (a connector).
fn after_handshake<H: Handler>(handler: &H, info: SessionInfo, conn: &rustls::ServerConnection) -> SessionInfo {
    let cert = conn.peer_certificates().and_then(|c| c.first()).map(|c| crate::tls::fingerprint(c.as_ref()));
    let mut info = SessionInfo { tls: true, client_cert: cert, auth_user: None, auth_method: None, ..info };
    if let Some(a) = handler.tls_identity(&info) {
        info!(client = %info.client, user = %a.user, method = %a.method, "signed in by client certificate");
        info.auth_user = Some(a.user);
        info.auth_method = Some(a.method);
    }
    info
}

enum Mode {
    Command,
    Data {
        rx: StrictData,
        msg: Vec<u8>,
    },
    /// Oversize message: read to the end, keep nothing, then 552.
    Discard {
        rx: StrictData,
    },
    AuthPlain {
        line: LineReceiver<()>,
    },
    AuthLogin {
        line: LineReceiver<()>,
        user: Option<String>,
    },
    /// A mechanism of the application's (GSSAPI): a challenge is out, a response comes.
    Sasl {
        line: LineReceiver<()>,
        exchange: Box<dyn SaslExchange>,
    },
}

enum Step {
    Continue,
    Close,
    StartTls,
}

struct Session<H> {
    cfg: Arc<Config>,
    handler: Arc<H>,
    info: SessionInfo,
    deadline: Instant,
    greeted: bool,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    errors: usize,
    auth_failures: usize,
    /// Authenticated or gave MAIL: from here on `command_timeout` instead of `pre_auth_timeout`.
    engaged: bool,
    out: Vec<u8>,
    // CR/LF check of the command line being read (smtp-proto accepts a bare LF).
    line_prev: u8,
    line_bad: bool,
}

fn b64(s: &str) -> Option<Vec<u8>> {
    if s == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()
}

/// A credential part must be text without line breaks or NUL (which would smuggle fields).
fn cred(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    (!s.chars().any(|c| c.is_control())).then(|| s.to_string())
}

/// Why a DATA stream is refused, in German and English.
fn fault_text(f: DataFault) -> (&'static str, &'static str) {
    match f {
        DataFault::Nul => ("Die Nachricht enthält NUL-Bytes.", "The message contains NUL bytes."),
        DataFault::BareLf => {
            ("Die Nachricht enthält ein Zeilenende ohne CR (bare LF).", "The message contains a bare LF line ending.")
        }
        DataFault::BareCr => ("Die Nachricht enthält ein CR ohne LF (bare CR).", "The message contains a bare CR."),
    }
}

impl<H: Handler> Session<H> {
    fn new(cfg: Arc<Config>, handler: Arc<H>, info: SessionInfo, deadline: Instant) -> Self {
        Session {
            cfg,
            handler,
            info,
            deadline,
            greeted: false,
            mail_from: None,
            rcpts: Vec::new(),
            errors: 0,
            auth_failures: 0,
            engaged: false,
            out: Vec::new(),
            line_prev: b'\n',
            line_bad: false,
        }
    }

    fn say(&mut self, code: u16, esc: &str, de: &str, en: &str) {
        self.out.extend(bilingual(code, esc, de, en));
    }

    fn error(&mut self, code: u16, esc: &str, de: &str, en: &str) -> Step {
        self.say(code, esc, de, en);
        self.count_error()
    }

    /// A handler refused MAIL or RCPT: counts toward the error limit (address harvesting).
    fn refused(&mut self, r: Reject) -> Step {
        self.out.extend(r.to_wire());
        self.count_error()
    }

    /// One more error; at the limit the session ends with a 421.
    fn count_error(&mut self) -> Step {
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            self.say(
                421,
                "4.7.0",
                "Zu viele Fehler, Verbindung wird getrennt.",
                "Too many errors, closing connection.",
            );
            return Step::Close;
        }
        Step::Continue
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    fn envelope(&self) -> Envelope {
        Envelope {
            session: self.info.clone(),
            mail_from: self.mail_from.clone().unwrap_or_default(),
            rcpt_to: self.rcpts.clone(),
        }
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, s: &mut S) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        match tokio::time::timeout(self.cfg.command_timeout, async {
            s.write_all(&out).await?;
            s.flush().await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timeout")),
        }
    }

    /// Run until QUIT, error or STARTTLS; on STARTTLS hand the stream back for the handshake.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, mut s: S, greet: bool) -> std::io::Result<Option<S>> {
        if greet {
            let name = if self.cfg.lmtp { "LMTP" } else { "ESMTP" };
            self.out.extend(format!("220 {} {name} De-Mail-Gateway bereit / ready\r\n", self.cfg.hostname).as_bytes());
        }
        let mut mode = Mode::Command;
        let mut receiver = RequestReceiver::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            self.flush(&mut s).await?;
            let per_read = match mode {
                Mode::Data { .. } | Mode::Discard { .. } => self.cfg.data_timeout,
                _ if !self.engaged => self.cfg.command_timeout.min(self.cfg.pre_auth_timeout),
                _ => self.cfg.command_timeout,
            };
            let now = Instant::now();
            if now >= self.deadline {
                self.say(421, "4.4.2", "Sitzungsdauer überschritten.", "Session time limit exceeded.");
                let _ = self.flush(&mut s).await;
                return Ok(None);
            }
            let wait = per_read.min(self.deadline - now);
            let n = match tokio::time::timeout(wait, s.read(&mut buf)).await {
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
                Err(_) if !self.engaged && per_read < self.cfg.command_timeout => {
                    info!(client = %self.info.client, secs = per_read.as_secs_f32(), "idle before AUTH/MAIL; closing");
                    self.say(
                        421,
                        "4.4.2",
                        "Zeitüberschreitung vor der Anmeldung, Verbindung wird getrennt.",
                        "Timeout before authentication, closing connection.",
                    );
                    let _ = self.flush(&mut s).await;
                    return Ok(None);
                }
                Err(_) => {
                    debug!(client = %self.info.client, "timeout");
                    self.say(
                        421,
                        "4.4.2",
                        "Zeitüberschreitung, Verbindung wird getrennt.",
                        "Timeout, closing connection.",
                    );
                    let _ = self.flush(&mut s).await;
                    return Ok(None);
                }
            };
            let mut iter = buf[..n].iter();
            while iter.len() > 0 {
                let step = match &mut mode {
                    Mode::Command => {
                        let before = iter.as_slice();
                        let parsed = receiver.ingest(&mut iter);
                        let consumed = &before[..before.len() - iter.len()];
                        for &b in consumed {
                            if b == 0
                                || (b == b'\n' && self.line_prev != b'\r')
                                || (self.line_prev == b'\r' && b != b'\n')
                            {
                                self.line_bad = true;
                            }
                            self.line_prev = b;
                        }
                        match parsed {
                            Err(ProtoError::NeedsMoreData { .. }) => break,
                            _ if std::mem::take(&mut self.line_bad) => {
                                self.line_prev = b'\n';
                                self.error(
                                    500,
                                    "5.5.2",
                                    "Ungültiges Zeilenende oder NUL im Befehl.",
                                    "Invalid line ending or NUL in command.",
                                )
                            }
                            Ok(req) => {
                                let req = req.into_owned();
                                self.command(req, &mut mode).await
                            }
                            Err(e) => self.proto_error(e),
                        }
                    }
                    Mode::Data { rx, msg } => {
                        let done = rx.ingest(&mut iter, Some(msg));
                        if msg.len() > self.cfg.max_message_size {
                            let rx = std::mem::take(rx);
                            if done {
                                mode = Mode::Command;
                                self.data_refused(rx.fault(), true)
                            } else {
                                mode = Mode::Discard { rx };
                                Step::Continue
                            }
                        } else if done {
                            let msg = std::mem::take(msg);
                            let fault = rx.fault();
                            mode = Mode::Command;
                            match fault {
                                None => self.finish_data(msg).await,
                                Some(f) => self.data_refused(Some(f), false),
                            }
                        } else {
                            Step::Continue
                        }
                    }
                    Mode::Discard { rx } => {
                        if rx.ingest(&mut iter, None) {
                            let fault = rx.fault();
                            mode = Mode::Command;
                            self.data_refused(fault, true)
                        } else {
                            Step::Continue
                        }
                    }
                    Mode::AuthPlain { line } => {
                        if line.ingest(&mut iter) {
                            let l = String::from_utf8_lossy(&line.buf).to_string();
                            mode = Mode::Command;
                            self.auth_plain(&l).await
                        } else {
                            Step::Continue
                        }
                    }
                    Mode::AuthLogin { line, user } => {
                        if line.ingest(&mut iter) {
                            let l = String::from_utf8_lossy(&line.buf).to_string();
                            let user = user.take();
                            mode = Mode::Command;
                            self.auth_login(&l, user, &mut mode).await
                        } else {
                            Step::Continue
                        }
                    }
                    Mode::Sasl { line, .. } => {
                        if line.ingest(&mut iter) {
                            let l = String::from_utf8_lossy(&line.buf).to_string();
                            let Mode::Sasl { exchange, .. } = std::mem::replace(&mut mode, Mode::Command) else {
                                unreachable!("matched above")
                            };
                            self.sasl_response(&l, exchange, &mut mode).await
                        } else {
                            Step::Continue
                        }
                    }
                };
                match step {
                    Step::Continue => {}
                    Step::Close => {
                        let _ = self.flush(&mut s).await;
                        return Ok(None);
                    }
                    Step::StartTls => {
                        // Bytes pipelined after STARTTLS would be injected into the TLS session (CVE-2011-0411).
                        if iter.len() > 0 {
                            self.out.clear();
                            self.say(
                                554,
                                "5.5.1",
                                "Nach STARTTLS darf nichts vorausgeschickt werden.",
                                "No pipelined commands allowed after STARTTLS.",
                            );
                            let _ = self.flush(&mut s).await;
                            return Ok(None);
                        }
                        self.flush(&mut s).await?;
                        return Ok(Some(s));
                    }
                }
            }
        }
    }

    /// A DATA stream that ended but is not taken: too large, or with a bare CR or LF
    /// (then the client's framing is not ours, so nothing it sends is read any more).
    fn data_refused(&mut self, fault: Option<DataFault>, too_big: bool) -> Step {
        self.reset();
        match fault {
            Some(f @ (DataFault::BareCr | DataFault::BareLf)) => {
                warn!(client = %self.info.client, fault = ?f, "DATA with a bare CR or LF refused; closing (SMTP smuggling guard)");
                let (de, en) = fault_text(f);
                self.say(554, "5.6.0", de, en);
                self.say(421, "4.7.0", "Verbindung wird getrennt.", "Closing connection.");
                Step::Close
            }
            _ if too_big => self.too_big(),
            Some(f) => {
                let (de, en) = fault_text(f);
                self.say(554, "5.6.0", de, en);
                Step::Continue
            }
            None => Step::Continue,
        }
    }

    fn too_big(&mut self) -> Step {
        let max = self.cfg.max_message_size;
        self.say(
            552,
            "5.3.4",
            &format!("Die Nachricht ist zu groß (höchstens {max} Bytes)."),
            &format!("Message too large (at most {max} bytes)."),
        );
        Step::Continue
    }

    fn proto_error(&mut self, e: ProtoError) -> Step {
        match e {
            ProtoError::UnknownCommand => self.error(500, "5.5.1", "Unbekannter Befehl.", "Unknown command."),
            ProtoError::InvalidSenderAddress => {
                self.error(501, "5.1.7", "Ungültige Absenderadresse.", "Invalid sender address.")
            }
            ProtoError::InvalidRecipientAddress => {
                self.error(501, "5.1.3", "Ungültige Empfängeradresse.", "Invalid recipient address.")
            }
            ProtoError::SyntaxError { syntax } => self.error(
                501,
                "5.5.4",
                &format!("Syntaxfehler, erwartet: {syntax}"),
                &format!("Syntax error, expected: {syntax}"),
            ),
            ProtoError::InvalidParameter { param } => self.error(
                501,
                "5.5.4",
                &format!("Ungültiger Parameter {param}."),
                &format!("Invalid parameter {param}."),
            ),
            ProtoError::UnsupportedParameter { .. } => {
                self.error(555, "5.5.4", "Parameter nicht unterstützt.", "Unsupported parameter.")
            }
            ProtoError::ResponseTooLong => self.error(500, "5.5.6", "Befehlszeile zu lang.", "Command line too long."),
            ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
                self.error(500, "5.5.2", "Ungültige Eingabe.", "Invalid input.")
            }
        }
    }

    fn ehlo(&mut self, host: String, extended: bool) {
        self.reset();
        self.greeted = true;
        self.info.helo = host.chars().filter(|c| !c.is_control()).take(255).collect();
        if !extended {
            self.out.extend(format!("250 {} Hallo / hello\r\n", self.cfg.hostname).as_bytes());
            return;
        }
        let mut r = EhloResponse::new(self.cfg.hostname.as_str());
        r.capabilities = smtp_proto::EXT_PIPELINING
            | smtp_proto::EXT_8BIT_MIME
            | smtp_proto::EXT_ENHANCED_STATUS_CODES
            | smtp_proto::EXT_SIZE
            | smtp_proto::EXT_SMTP_UTF8;
        r.size = self.cfg.max_message_size;
        if self.cfg.tls.is_some() && !self.info.tls {
            r.capabilities |= smtp_proto::EXT_START_TLS;
        }
        if self.auth_possible() && self.info.auth_user.is_none() {
            r.capabilities |= smtp_proto::EXT_AUTH;
            r.auth_mechanisms = self.handler.sasl_mechanisms();
            if self.cfg.password_auth {
                r.auth_mechanisms |= smtp_proto::AUTH_PLAIN | smtp_proto::AUTH_LOGIN;
            }
        }
        let _ = r.write(&mut self.out);
    }

    fn auth_possible(&self) -> bool {
        self.cfg.offer_auth && (self.info.tls || self.cfg.allow_auth_without_tls)
    }

    async fn command(&mut self, req: Request<String>, mode: &mut Mode) -> Step {
        let lmtp = self.cfg.lmtp;
        match req {
            Request::Ehlo { host } if !lmtp => {
                self.ehlo(host, true);
                Step::Continue
            }
            Request::Helo { host } if !lmtp => {
                self.ehlo(host, false);
                Step::Continue
            }
            Request::Lhlo { host } if lmtp => {
                self.ehlo(host, true);
                Step::Continue
            }
            Request::Ehlo { .. } | Request::Helo { .. } | Request::Lhlo { .. } => {
                let (de, en) = if lmtp {
                    ("Dies ist ein LMTP-Server; bitte LHLO.", "This is an LMTP server; use LHLO.")
                } else {
                    ("Bitte EHLO oder HELO.", "Use EHLO or HELO.")
                };
                self.error(500, "5.5.1", de, en)
            }
            Request::StartTls => {
                if self.cfg.tls.is_none() || self.info.tls {
                    self.error(502, "5.5.1", "STARTTLS ist hier nicht verfügbar.", "STARTTLS not available.")
                } else {
                    self.say(220, "2.0.0", "Bereit für TLS.", "Ready to start TLS.");
                    Step::StartTls
                }
            }
            Request::Auth { mechanism, initial_response } => self.auth_start(mechanism, initial_response, mode).await,
            Request::Mail { from } => {
                if !self.greeted {
                    return self.error(503, "5.5.1", "Bitte zuerst EHLO.", "Send EHLO first.");
                }
                if self.cfg.require_tls && !self.info.tls {
                    return self.error(530, "5.7.0", "Bitte zuerst STARTTLS.", "Must issue a STARTTLS command first.");
                }
                if self.cfg.require_auth && self.info.auth_user.is_none() {
                    return self.error(530, "5.7.0", "Anmeldung erforderlich.", "Authentication required.");
                }
                if self.mail_from.is_some() {
                    return self.error(503, "5.5.1", "Absender bereits angegeben.", "Sender already specified.");
                }
                if from.size > self.cfg.max_message_size {
                    let max = self.cfg.max_message_size;
                    self.say(
                        552,
                        "5.3.4",
                        &format!("Die Nachricht ist zu groß (höchstens {max} Bytes)."),
                        &format!("Message too large (at most {max} bytes)."),
                    );
                    return Step::Continue;
                }
                match self.handler.mail_from(&self.info, &from.address) {
                    Ok(()) => {
                        self.engaged = true;
                        self.mail_from = Some(from.address);
                        self.say(250, "2.1.0", "Absender in Ordnung.", "Sender OK.");
                    }
                    Err(r) => return self.refused(r),
                }
                Step::Continue
            }
            Request::Rcpt { to } => {
                if self.mail_from.is_none() {
                    return self.error(503, "5.5.1", "Bitte zuerst MAIL FROM.", "Send MAIL FROM first.");
                }
                if self.rcpts.len() >= self.cfg.max_recipients {
                    self.say(452, "4.5.3", "Zu viele Empfänger.", "Too many recipients.");
                    return Step::Continue;
                }
                if to.address.is_empty() {
                    return self.error(501, "5.1.3", "Leere Empfängeradresse.", "Empty recipient address.");
                }
                let env = self.envelope();
                match self.handler.rcpt_to(&env, &to.address) {
                    Ok(()) => {
                        self.rcpts.push(to.address);
                        self.say(250, "2.1.5", "Empfänger in Ordnung.", "Recipient OK.");
                    }
                    Err(r) => return self.refused(r),
                }
                Step::Continue
            }
            Request::Data => {
                if self.mail_from.is_none() || self.rcpts.is_empty() {
                    return self.error(
                        503,
                        "5.5.1",
                        "Bitte zuerst MAIL FROM und RCPT TO.",
                        "Send MAIL FROM and RCPT TO first.",
                    );
                }
                self.out.extend_from_slice(
                    b"354 Nachricht senden, Ende mit <CRLF>.<CRLF> / End data with <CRLF>.<CRLF>\r\n",
                );
                *mode = Mode::Data { rx: StrictData::new(), msg: Vec::with_capacity(64 * 1024) };
                Step::Continue
            }
            Request::Rset => {
                self.reset();
                self.say(250, "2.0.0", "Zurückgesetzt.", "Reset OK.");
                Step::Continue
            }
            Request::Noop { .. } => {
                self.say(250, "2.0.0", "OK.", "OK.");
                Step::Continue
            }
            Request::Quit => {
                self.say(221, "2.0.0", "Auf Wiedersehen.", "Bye.");
                Step::Close
            }
            Request::Vrfy { .. } | Request::Expn { .. } => {
                self.say(502, "5.5.1", "VRFY/EXPN ist abgeschaltet.", "VRFY/EXPN is disabled.");
                Step::Continue
            }
            Request::Help { .. } => {
                self.say(214, "2.0.0", "Siehe RFC 5321.", "See RFC 5321.");
                Step::Continue
            }
            Request::Bdat { .. } | Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.error(502, "5.5.1", "Befehl nicht unterstützt.", "Command not implemented.")
            }
        }
    }

    async fn finish_data(&mut self, msg: Vec<u8>) -> Step {
        let env = self.envelope();
        self.reset();
        let n_replies = if self.cfg.lmtp { env.rcpt_to.len() } else { 1 };
        let result = self.handler.deliver(&env, msg).await;
        let wire = match &result {
            Ok(a) => {
                info!(client = %self.info.client, id = %a.id, rcpts = env.rcpt_to.len(), "accepted");
                let id: String = a.id.chars().filter(|c| !c.is_control()).collect();
                bilingual(250, "2.0.0", &format!("Angenommen, Kennung {id}."), &format!("Accepted, queued as {id}."))
            }
            Err(r) => {
                info!(client = %self.info.client, code = r.code, esc = %r.enhanced, "refused");
                r.to_wire()
            }
        };
        for _ in 0..n_replies {
            self.out.extend_from_slice(&wire);
        }
        Step::Continue
    }

    async fn auth_start(&mut self, mechanism: u64, initial: String, mode: &mut Mode) -> Step {
        if !self.cfg.offer_auth {
            return self.error(502, "5.5.1", "AUTH wird nicht angeboten.", "AUTH not offered.");
        }
        if !self.auth_possible() {
            return self.error(538, "5.7.11", "Anmeldung nur über TLS.", "Encryption required for authentication.");
        }
        if self.info.auth_user.is_some() || self.mail_from.is_some() {
            return self.error(503, "5.5.1", "AUTH ist jetzt nicht erlaubt.", "AUTH not allowed now.");
        }
        if mechanism & self.handler.sasl_mechanisms() != 0 {
            if let Some(step) = self.locked_out("") {
                return step;
            }
            let Some(exchange) = self.handler.sasl_start(mechanism, &self.info) else {
                return self.error(
                    504,
                    "5.5.4",
                    "Anmeldeverfahren nicht verfügbar.",
                    "Authentication mechanism not available.",
                );
            };
            // "=" is an empty initial response (RFC 4954); none at all starts with an empty challenge.
            let first = match initial.as_str() {
                "" | "=" => Vec::new(),
                s => match b64(s) {
                    Some(v) => v,
                    None => return self.auth_malformed(),
                },
            };
            return self.sasl_step(exchange, &first, mode).await;
        }
        if !self.cfg.password_auth {
            return self.error(
                504,
                "5.5.4",
                "Anmeldeverfahren nicht unterstützt.",
                "Authentication mechanism not supported.",
            );
        }
        if mechanism == smtp_proto::AUTH_PLAIN {
            if initial.is_empty() {
                self.out.extend_from_slice(b"334 \r\n");
                *mode = Mode::AuthPlain { line: LineReceiver::new(()) };
                Step::Continue
            } else {
                self.auth_plain(&initial).await
            }
        } else if mechanism == smtp_proto::AUTH_LOGIN {
            if initial.is_empty() {
                self.out.extend_from_slice(b"334 VXNlcm5hbWU6\r\n");
                *mode = Mode::AuthLogin { line: LineReceiver::new(()), user: None };
                Step::Continue
            } else {
                self.auth_login(&initial, None, mode).await
            }
        } else {
            self.error(504, "5.5.4", "Anmeldeverfahren nicht unterstützt.", "Authentication mechanism not supported.")
        }
    }

    fn auth_cancelled(line: &str) -> bool {
        line.trim() == "*"
    }

    fn auth_malformed(&mut self) -> Step {
        self.error(501, "5.5.2", "Ungültige Anmeldedaten (Format).", "Malformed authentication data.")
    }

    async fn auth_plain(&mut self, line: &str) -> Step {
        if Self::auth_cancelled(line) {
            return self.error(501, "5.0.0", "Anmeldung abgebrochen.", "Authentication cancelled.");
        }
        let Some(raw) = b64(line) else {
            return self.auth_malformed();
        };
        let parts: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        if parts.len() != 3 {
            return self.auth_malformed();
        }
        let (Some(authz), Some(user), Some(pass)) = (cred(parts[0]), cred(parts[1]), cred(parts[2])) else {
            return self.auth_malformed();
        };
        if !authz.is_empty() && authz != user {
            return self.auth_failed(Some(&user)).await;
        }
        self.auth_check(user, pass).await
    }

    async fn auth_login(&mut self, line: &str, user: Option<String>, mode: &mut Mode) -> Step {
        if Self::auth_cancelled(line) {
            return self.error(501, "5.0.0", "Anmeldung abgebrochen.", "Authentication cancelled.");
        }
        let Some(v) = b64(line).and_then(|r| cred(&r)) else {
            return self.auth_malformed();
        };
        match user {
            None => {
                self.out.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
                *mode = Mode::AuthLogin { line: LineReceiver::new(()), user: Some(v) };
                Step::Continue
            }
            Some(u) => self.auth_check(u, v).await,
        }
    }

    async fn auth_check(&mut self, user: String, pass: String) -> Step {
        if user.is_empty() {
            info!(client = %self.info.client, "authentication failed (no user name)");
            return self.auth_failed(None).await;
        }
        if let Some(step) = self.locked_out(&user) {
            return step;
        }
        let result = self.handler.authenticate(&user, &pass).await;
        self.auth_done(result, Some(&user)).await
    }

    /// Locked after repeated failures (this address, or this user name from strangers):
    /// the credentials are not even looked at.
    fn locked_out(&mut self, user: &str) -> Option<Step> {
        let left = self.cfg.auth_throttle.locked(self.info.client.ip(), user)?;
        let secs = left.as_secs().max(1);
        warn!(client = %self.info.client, user = %user, secs, "AUTH refused: locked after repeated failures");
        self.say(
            454,
            "4.7.0",
            &format!("Zu viele fehlgeschlagene Anmeldungen; bitte in {secs} Sekunden erneut versuchen."),
            &format!("Too many failed logins; try again in {secs} seconds."),
        );
        Some(self.count_error())
    }

    async fn sasl_response(&mut self, line: &str, exchange: Box<dyn SaslExchange>, mode: &mut Mode) -> Step {
        if Self::auth_cancelled(line) {
            return self.error(501, "5.0.0", "Anmeldung abgebrochen.", "Authentication cancelled.");
        }
        let Some(response) = b64(line) else {
            return self.auth_malformed();
        };
        self.sasl_step(exchange, &response, mode).await
    }

    async fn sasl_step(&mut self, mut exchange: Box<dyn SaslExchange>, response: &[u8], mode: &mut Mode) -> Step {
        match exchange.step(response).await {
            SaslStep::Challenge(c) => {
                let c = base64::engine::general_purpose::STANDARD.encode(c);
                self.out.extend_from_slice(format!("334 {c}\r\n").as_bytes());
                *mode = Mode::Sasl { line: LineReceiver::new(()), exchange };
                Step::Continue
            }
            // The user is known only at the end of the exchange; failures count per address.
            SaslStep::Finished(result) => self.auth_done(result, None).await,
        }
    }

    async fn auth_done(&mut self, result: AuthResult, user: Option<&str>) -> Step {
        match result {
            AuthResult::Accepted(a) => {
                info!(client = %self.info.client, user = %a.user, method = %a.method, "authenticated");
                self.cfg.auth_throttle.succeeded(self.info.client.ip(), user.unwrap_or(&a.user));
                self.engaged = true;
                let who = a.display.clone().unwrap_or_else(|| a.user.clone());
                self.say(
                    235,
                    "2.7.0",
                    &format!("Angemeldet als {who} ({}).", a.method),
                    &format!("Authenticated as {who} ({}).", a.method),
                );
                self.info.auth_user = Some(a.user);
                self.info.auth_method = Some(a.method);
                Step::Continue
            }
            AuthResult::Refused => {
                info!(client = %self.info.client, user = user.unwrap_or(""), "authentication failed");
                self.auth_failed(user).await
            }
            AuthResult::Unavailable(r) => {
                info!(client = %self.info.client, code = r.code, "authentication not possible now");
                self.out.extend(r.to_wire());
                Step::Continue
            }
        }
    }

    async fn auth_failed(&mut self, user: Option<&str>) -> Step {
        if let Some(lock) = self.cfg.auth_throttle.failed(self.info.client.ip(), user) {
            warn!(client = %self.info.client, user = user.unwrap_or(""), secs = lock.as_secs(), "repeated AUTH failures: locked out");
        }
        self.auth_failures += 1;
        // Slow down guessing.
        tokio::time::sleep(Duration::from_millis(250)).await;
        if self.auth_failures >= 3 {
            self.say(535, "5.7.8", "Anmeldedaten ungültig.", "Authentication credentials invalid.");
            self.say(421, "4.7.0", "Zu viele Fehlversuche.", "Too many failed attempts.");
            return Step::Close;
        }
        self.error(535, "5.7.8", "Anmeldedaten ungültig.", "Authentication credentials invalid.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_reject_control_chars() {
        assert_eq!(cred(b"peter"), Some("peter".into()));
        assert_eq!(cred(b"peter\r\nRCPT"), None);
        assert_eq!(cred(&[0xff, 0xfe]), None);
    }
}
