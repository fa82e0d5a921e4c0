//! RTP/RTCP port pairs for call legs.

use crate::config::PortRange;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::net::UdpSocket;

/// Hands out even/odd port pairs from the configured range, round-robin, so a port just
/// released is not reused at once (late packets of an old call must not reach a new one).
pub struct RtpPorts {
    range: PortRange,
    next: AtomicU32,
}

pub struct RtpPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub port: u16,
}

impl RtpPorts {
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            next: AtomicU32::new(0),
        }
    }

    fn pairs(&self) -> u32 {
        let low = self.range.low.next_multiple_of(2) as u32;
        (self.range.high as u32 + 1 - low) / 2
    }

    /// Binds the next free pair on `ip`; None when every pair in the range is busy.
    pub async fn bind(&self, ip: IpAddr) -> Option<RtpPair> {
        self.bind_now(ip)
    }

    /// One port (a WebRTC leg multiplexes RTP and RTCP), round-robin over the whole range.
    pub fn bind_one(&self, ip: IpAddr) -> Option<(UdpSocket, u16)> {
        let count = self.range.high as u32 + 1 - self.range.low as u32;
        for _ in 0..count {
            let port =
                (self.range.low as u32 + self.next.fetch_add(1, Ordering::Relaxed) % count) as u16;
            match open(SocketAddr::new(ip, port)) {
                Ok(s) => return Some((s, port)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    tracing::error!(error = %e, port, "cannot open a WebRTC socket");
                    return None;
                }
            }
        }
        None
    }

    /// The same, from synchronous code (binding a UDP socket does not block).
    pub fn bind_now(&self, ip: IpAddr) -> Option<RtpPair> {
        let pairs = self.pairs();
        let low = self.range.low.next_multiple_of(2) as u32;
        let open = |port: u16| open(SocketAddr::new(ip, port));
        for _ in 0..pairs {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % pairs;
            let port = (low + 2 * n) as u16;
            let pair = open(port).and_then(|rtp| {
                Ok(RtpPair {
                    rtp,
                    rtcp: open(port + 1)?,
                    port,
                })
            });
            match pair {
                Ok(p) => return Some(p),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    // Not a busy port (e.g. out of file descriptors): trying more won't help.
                    tracing::error!(error = %e, port, "cannot open RTP sockets");
                    return None;
                }
            }
        }
        None
    }
}

fn open(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pairs_are_even_odd_and_skip_busy_ports() {
        let ports = RtpPorts::new(PortRange {
            low: 41001,
            high: 41007,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = ports.bind(ip).await.unwrap();
        let b = ports.bind(ip).await.unwrap();
        let c = ports.bind(ip).await.unwrap();
        let mut got = vec![a.port, b.port, c.port];
        got.sort();
        assert_eq!(got, vec![41002, 41004, 41006]);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.port + 1);
        // Every pair is held: the range is exhausted.
        assert!(ports.bind(ip).await.is_none());
        drop(b);
        assert!(ports.bind(ip).await.is_some());
    }

    #[tokio::test]
    async fn single_ports_cover_the_range_and_skip_busy_ones() {
        let ports = RtpPorts::new(PortRange {
            low: 41101,
            high: 41103,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| ports.bind_one(ip).unwrap()).collect();
        let mut got: Vec<u16> = held.iter().map(|(_, p)| *p).collect();
        got.sort();
        assert_eq!(got, vec![41101, 41102, 41103]);
        assert!(ports.bind_one(ip).is_none());
    }
}
