//! PROXY protocol v2 (HAProxy's binary header) in front of a session, parsed with `ppp`.
//! Read only on connections from a configured balancer, so nobody else can claim an address.

use std::io::{Error, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Signature (12 bytes), version/command, family/protocol, length (u16): 16 bytes.
const FIXED: usize = 16;
/// Addresses plus the TLVs HAProxy may add (unique id, TLS facts): far below this.
const MAX_PAYLOAD: usize = 2048;

/// Read exactly one v2 header. `Ok(Some(source))`: the client the balancer forwards;
/// `Ok(None)`: a `LOCAL` connection (the balancer's own health check), which keeps the
/// balancer's address. Anything else is an error: the connection is closed.
pub async fn read_v2<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> std::io::Result<Option<SocketAddr>> {
    let bad = |why: String| Error::new(ErrorKind::InvalidData, why);
    let read = async {
        let mut buf = vec![0u8; FIXED];
        stream.read_exact(&mut buf).await.map_err(|e| Error::new(e.kind(), format!("no PROXY header: {e}")))?;
        if &buf[..12] != ppp::v2::PROTOCOL_PREFIX {
            return Err(bad("no PROXY v2 signature".into()));
        }
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(bad(format!("PROXY header of {len} bytes is too long")));
        }
        buf.resize(FIXED + len, 0);
        stream
            .read_exact(&mut buf[FIXED..])
            .await
            .map_err(|e| Error::new(e.kind(), format!("PROXY header cut short: {e}")))?;
        let h = ppp::v2::Header::try_from(buf.as_slice()).map_err(|e| bad(format!("PROXY header invalid: {e}")))?;
        Ok(match (h.command, h.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
            (_, ppp::v2::Addresses::IPv6(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
            (_, other) => return Err(bad(format!("PROXY header without an IP source: {other:?}"))),
        })
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| Error::new(ErrorKind::TimedOut, "no PROXY header in time"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cmd: ppp::v2::Command, src: &str) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = "10.0.0.5:587".parse().unwrap();
        ppp::v2::Builder::with_addresses(ppp::v2::Version::Two | cmd, ppp::v2::Protocol::Stream, (src, dst))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn the_source_comes_from_the_header_and_nothing_after_it_is_read() {
        let mut input = header(ppp::v2::Command::Proxy, "192.0.2.7:40000");
        input.extend_from_slice(b"EHLO x\r\n");
        let mut r = input.as_slice();
        let got = read_v2(&mut r, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got, Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(r, b"EHLO x\r\n");
        let local = header(ppp::v2::Command::Local, "192.0.2.7:1");
        assert_eq!(read_v2(&mut local.as_slice(), Duration::from_secs(1)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn garbage_or_v1_or_a_short_header_is_refused() {
        for bad in [
            b"EHLO client.example\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 10.0.0.5 40000 587\r\n".to_vec(),
            header(ppp::v2::Command::Proxy, "192.0.2.7:40000")[..20].to_vec(),
        ] {
            assert!(read_v2(&mut bad.as_slice(), Duration::from_secs(1)).await.is_err(), "{bad:?}");
        }
        let mut long = header(ppp::v2::Command::Proxy, "192.0.2.7:40000");
        long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(read_v2(&mut long.as_slice(), Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string()
            .contains("too long"));
    }
}
