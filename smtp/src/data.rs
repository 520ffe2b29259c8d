//! The DATA stream: ends at exactly `<CRLF>.<CRLF>` and nowhere else.
//!
//! smtp-proto's `DataReceiver` also ends at `<CRLF>.<CR><CR><LF>` (any number of CRs
//! before the LF). A server that refused such a message and read on would take the bytes
//! after it as new commands: SMTP smuggling (CVE-2023-51764 class). So the end of data is
//! recognised here, strictly, and a stream with a bare CR or LF is marked so that the
//! session refuses it and closes the connection instead of reading commands from it.

/// What went wrong in a DATA stream (the first problem seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFault {
    BareLf,
    BareCr,
    Nul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After `<CRLF>` or at the start of the data.
    LineStart,
    /// Inside a line.
    Text,
    /// A CR was read; only LF may follow.
    Cr,
    /// A dot at the start of a line (dot-stuffing, or the end mark).
    Dot,
    /// `<CRLF>.<CR>`: the end if LF follows.
    DotCr,
}

/// Reads message data up to the end mark, removes dot-stuffing (RFC 5321 §4.5.2) and
/// keeps the final CRLF of the last line, as smtp-proto does.
#[derive(Debug)]
pub struct StrictData {
    state: State,
    fault: Option<DataFault>,
    /// Bytes seen, kept or not (for the size limit while discarding).
    seen: usize,
}

impl Default for StrictData {
    fn default() -> Self {
        StrictData { state: State::LineStart, fault: None, seen: 0 }
    }
}

impl StrictData {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first bare CR, bare LF or NUL in the stream so far.
    pub fn fault(&self) -> Option<DataFault> {
        self.fault
    }

    /// Bytes of the DATA stream read so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    fn flag(&mut self, f: DataFault) {
        self.fault.get_or_insert(f);
    }

    /// Take bytes from `bytes` into `out` (when given; `None` discards) until the end
    /// mark. Returns true at the end mark; the bytes after it stay in `bytes`.
    pub fn ingest(&mut self, bytes: &mut std::slice::Iter<'_, u8>, mut out: Option<&mut Vec<u8>>) -> bool {
        let push = |out: &mut Option<&mut Vec<u8>>, b: &[u8]| {
            if let Some(o) = out.as_deref_mut() {
                o.extend_from_slice(b);
            }
        };
        for &b in bytes.by_ref() {
            self.seen += 1;
            if b == 0 {
                self.flag(DataFault::Nul);
            }
            self.state = match (self.state, b) {
                (State::LineStart, b'.') => State::Dot,
                (State::LineStart | State::Text, b'\r') => State::Cr,
                (State::LineStart | State::Text, b'\n') => {
                    self.flag(DataFault::BareLf);
                    push(&mut out, b"\n");
                    State::Text
                }
                (State::LineStart | State::Text, _) => {
                    push(&mut out, &[b]);
                    State::Text
                }
                (State::Cr, b'\n') => {
                    push(&mut out, b"\r\n");
                    State::LineStart
                }
                (State::Cr, b'\r') => {
                    self.flag(DataFault::BareCr);
                    push(&mut out, b"\r");
                    State::Cr
                }
                (State::Cr, _) => {
                    self.flag(DataFault::BareCr);
                    push(&mut out, &[b'\r', b]);
                    State::Text
                }
                (State::Dot, b'\r') => State::DotCr,
                // The stuffed dot goes; the rest of the line stays.
                (State::Dot, b'\n') => {
                    self.flag(DataFault::BareLf);
                    push(&mut out, b"\n");
                    State::Text
                }
                (State::Dot, _) => {
                    push(&mut out, &[b]);
                    State::Text
                }
                (State::DotCr, b'\n') => {
                    self.state = State::LineStart;
                    return true;
                }
                (State::DotCr, b'\r') => {
                    self.flag(DataFault::BareCr);
                    push(&mut out, b"\r");
                    State::Cr
                }
                (State::DotCr, _) => {
                    self.flag(DataFault::BareCr);
                    push(&mut out, &[b'\r', b]);
                    State::Text
                }
            };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` one byte at a time and all at once; both must agree.
    fn run(input: &[u8]) -> (Vec<u8>, bool, Option<DataFault>, Vec<u8>) {
        let mut whole = StrictData::new();
        let mut out = Vec::new();
        let mut it = input.iter();
        let done = whole.ingest(&mut it, Some(&mut out));
        let rest = it.as_slice().to_vec();

        let mut bytewise = StrictData::new();
        let mut out2 = Vec::new();
        let mut done2 = false;
        let mut consumed = 0;
        for chunk in input.chunks(1) {
            let mut it = chunk.iter();
            consumed += 1;
            if bytewise.ingest(&mut it, Some(&mut out2)) {
                done2 = true;
                break;
            }
        }
        assert_eq!((&out, done, whole.fault()), (&out2, done2, bytewise.fault()), "chunking changed the result");
        if done {
            assert_eq!(&input[consumed..], &rest[..]);
        }
        (out, done, whole.fault(), rest)
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (msg, done, fault, rest) = run(b"Subject: x\r\n\r\nText\r\n.\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(msg, b"Subject: x\r\n\r\nText\r\n");
        assert_eq!(fault, None);
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn an_empty_message_ends_at_once() {
        let (msg, done, fault, _) = run(b".\r\n");
        assert!(done && msg.is_empty() && fault.is_none());
    }

    #[test]
    fn dots_are_unstuffed() {
        let (msg, done, _, _) = run(b"..a\r\n.b\r\n...\r\n.\r\n");
        assert!(done);
        assert_eq!(msg, b".a\r\nb\r\n..\r\n");
    }

    #[test]
    fn smuggling_ends_are_not_ends() {
        // Each of these is what some server took for the end of data; none is one here,
        // so the smuggled commands stay message text and the stream is faulty.
        for end in [&b"\r\n.\r\r\n"[..], b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r\r\r\n"] {
            let mut input = b"Subject: x\r\n\r\nText".to_vec();
            input.extend_from_slice(end);
            input.extend_from_slice(b"MAIL FROM:<mayor@stadt.de>\r\nRCPT TO:<victim@x.de-mail.de>\r\nDATA\r\n");
            let (_, done, fault, _) = run(&input);
            assert!(!done, "{end:?} ended the data");
            assert!(fault.is_some(), "{end:?} not flagged");
            // The real end after the smuggled part ends it, still flagged.
            input.extend_from_slice(b"forged\r\n.\r\n");
            let (msg, done, fault, rest) = run(&input);
            assert!(done && fault.is_some() && rest.is_empty(), "{end:?}");
            assert!(msg.ends_with(b"forged\r\n"));
        }
    }

    #[test]
    fn faults_are_named() {
        assert_eq!(run(b"a\nb\r\n.\r\n").2, Some(DataFault::BareLf));
        assert_eq!(run(b"a\rb\r\n.\r\n").2, Some(DataFault::BareCr));
        assert_eq!(run(b"a\0b\r\n.\r\n").2, Some(DataFault::Nul));
        assert_eq!(run(b"a\r\n.\rb\r\n.\r\n").2, Some(DataFault::BareCr));
    }

    #[test]
    fn discarding_counts_but_keeps_nothing() {
        let mut d = StrictData::new();
        let data = b"12345\r\n.\r\n";
        let mut it = data.iter();
        assert!(d.ingest(&mut it, None));
        assert_eq!(d.seen(), data.len());
    }
}
