//! SIPp-shaped messages shared by the unit tests.

use std::net::SocketAddr;

use crate::message::{Peer, Transport};

pub const SDP: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 10.1.2.3\r\n\
s=-\r\n\
c=IN IP4 10.1.2.3\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n";

/// An INVITE as SIPp's uac scenario sends it (branch and Call-ID vary per test).
pub fn invite(branch: &str, call_id: &str) -> String {
    format!(
        "INVITE sip:800123456@10.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5061;branch={branch};rport\r\n\
Record-Route: <sip:10.9.9.9;lr>\r\n\
From: sipp <sip:sipp@10.1.2.3:5061>;tag=12345SIPpTag001\r\n\
To: 800123456 <sip:800123456@10.0.0.1:5060>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@10.1.2.3:5061\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\
\r\n{SDP}",
        SDP.len()
    )
}

/// A request in the same transaction/dialog as [`invite`].
pub fn in_tx(method: &str, branch: &str, call_id: &str, to_tag: Option<&str>) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let cseq_method = method;
    format!(
        "{method} sip:800123456@10.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5061;branch={branch};rport\r\n\
From: sipp <sip:sipp@10.1.2.3:5061>;tag=12345SIPpTag001\r\n\
To: 800123456 <sip:800123456@10.0.0.1:5060>{to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 {cseq_method}\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\
\r\n"
    )
}

pub fn udp_peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "10.1.2.3:5061".parse::<SocketAddr>().unwrap(),
    }
}

pub fn tcp_peer() -> Peer {
    Peer {
        transport: Transport::Tcp,
        addr: "10.1.2.3:40000".parse::<SocketAddr>().unwrap(),
    }
}
