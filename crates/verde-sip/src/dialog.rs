//! INVITE dialogs on both sides (RFC 3261 12), the INVITE verde sends to start one, and the
//! random identifiers SIP needs.

use std::net::{IpAddr, SocketAddr};

use crate::message::{
    param, split_list, split_name_addr, Method, Peer, Request, Response, Transport,
};

/// Why an INVITE (and, on the UAC side, its response) cannot found a dialog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("INVITE lacks the {0} header")]
    MissingHeader(&'static str),
    #[error("INVITE From has no tag (RFC 2543 peers are not supported)")]
    MissingFromTag,
    #[error("response To has no tag")]
    MissingToTag,
    #[error("a {0} response does not create a dialog")]
    NotDialogCreating(u16),
}

/// Our side of an INVITE dialog: one we answered with 2xx (or 1xx with a tag), built by
/// [`Dialog::uas`], or one we started, built by [`Dialog::uac`] from a 2xx or 1xx with a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    call_id: String,
    local_tag: String,
    remote_tag: String,
    /// Our address-of-record with our tag: the INVITE's To plus `;tag=`.
    local_uri: String,
    /// The caller's From, tag included.
    remote_uri: String,
    remote_target: String,
    /// Record-Route entries in request order, each as written (`<sip:p1;lr>`).
    route_set: Vec<String>,
    local_contact: String,
    via_transport: String,
    via_sent_by: String,
    local_cseq: u32,
    last_invite_cseq: u32,
    remote_cseq: u32,
}

/// Everything a [`Dialog`] holds, as plain fields: what the binary persists while a call is up
/// so that, after a crash, it can still address a BYE to the peer ([`Dialog::from_state`]).
/// The fields mean what the RFC 3261 12.1 dialog state means; `local_cseq` is the last CSeq
/// number we used (the next request takes one more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogState {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our From in requests, tag included.
    pub local_uri: String,
    /// Our To in requests, the peer's tag included.
    pub remote_uri: String,
    pub remote_target: String,
    /// Record-Route entries in request order.
    pub route_set: Vec<String>,
    pub local_contact: String,
    /// `UDP`, `TCP` or `TLS`, for our Via.
    pub via_transport: String,
    /// `host[:port]` of our Via.
    pub via_sent_by: String,
    pub local_cseq: u32,
    pub last_invite_cseq: u32,
    pub remote_cseq: u32,
}

impl Dialog {
    /// A copy of the dialog state, for storage.
    pub fn state(&self) -> DialogState {
        DialogState {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
            remote_tag: self.remote_tag.clone(),
            local_uri: self.local_uri.clone(),
            remote_uri: self.remote_uri.clone(),
            remote_target: self.remote_target.clone(),
            route_set: self.route_set.clone(),
            local_contact: self.local_contact.clone(),
            via_transport: self.via_transport.clone(),
            via_sent_by: self.via_sent_by.clone(),
            local_cseq: self.local_cseq,
            last_invite_cseq: self.last_invite_cseq,
            remote_cseq: self.remote_cseq,
        }
    }

    /// The dialog again from a stored [`DialogState`]. Nothing is checked: the state came from
    /// [`Dialog::state`].
    pub fn from_state(s: DialogState) -> Dialog {
        Dialog {
            call_id: s.call_id,
            local_tag: s.local_tag,
            remote_tag: s.remote_tag,
            local_uri: s.local_uri,
            remote_uri: s.remote_uri,
            remote_target: s.remote_target,
            route_set: s.route_set,
            local_contact: s.local_contact,
            via_transport: s.via_transport,
            via_sent_by: s.via_sent_by,
            local_cseq: s.local_cseq,
            last_invite_cseq: s.last_invite_cseq,
            remote_cseq: s.remote_cseq,
        }
    }

    /// Builds the UAS dialog state from the dialog-creating INVITE, the To tag we put in our
    /// answers and the Contact URI we advertise (also used as the Via sent-by of our requests).
    pub fn uas(
        invite: &Request,
        local_tag: &str,
        local_contact: &str,
    ) -> Result<Dialog, DialogError> {
        let call_id = invite
            .call_id()
            .ok_or(DialogError::MissingHeader("Call-ID"))?;
        let remote_uri = invite
            .headers
            .get("From")
            .ok_or(DialogError::MissingHeader("From"))?;
        let remote_tag = invite.from_tag().ok_or(DialogError::MissingFromTag)?;
        let to = invite
            .headers
            .get("To")
            .ok_or(DialogError::MissingHeader("To"))?;
        let remote_target = invite
            .contact_uri()
            .ok_or(DialogError::MissingHeader("Contact"))?;
        let (_, remote_cseq) = invite
            .cseq()
            .map(|(n, m)| (m, n))
            .ok_or(DialogError::MissingHeader("CSeq"))?;
        let route_set = invite
            .headers
            .get_all("Record-Route")
            .flat_map(split_list)
            .map(str::to_owned)
            .collect();
        let local_contact = split_name_addr(local_contact).0.to_owned();
        let via_sent_by = sent_by_of(&local_contact);
        let via_transport = invite
            .top_via()
            .map(|v| v.transport.to_ascii_uppercase())
            .unwrap_or_else(|| "UDP".to_owned());
        let mut local_uri = to.to_owned();
        if param(split_name_addr(to).1, "tag").is_none() {
            local_uri.push_str(";tag=");
            local_uri.push_str(local_tag);
        }
        // Our CSeq space is independent of the caller's (RFC 3261 12.1.1): start low and random.
        let local_cseq = rand::random::<u32>() % 10_000;
        Ok(Dialog {
            call_id: call_id.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: remote_tag.to_owned(),
            local_uri,
            remote_uri: remote_uri.to_owned(),
            remote_target: remote_target.to_owned(),
            route_set,
            local_contact,
            via_transport,
            via_sent_by,
            local_cseq,
            last_invite_cseq: remote_cseq,
            remote_cseq,
        })
    }

    /// Builds the UAC dialog state (RFC 3261 12.1.2) from the INVITE we sent and a response
    /// carrying a To tag: a 2xx (confirmed dialog) or a 101–199 (early dialog; build again
    /// from the 2xx, whose tag may differ when the call forked). The route set is the
    /// response's Record-Route reversed; the remote target its Contact (a 1xx without one
    /// falls back to the INVITE's Request-URI). Our requests reuse the INVITE's Via sent-by
    /// and transport, and continue its CSeq.
    pub fn uac(invite: &Request, response: &Response) -> Result<Dialog, DialogError> {
        if !(101..300).contains(&response.status) {
            return Err(DialogError::NotDialogCreating(response.status));
        }
        let call_id = invite
            .call_id()
            .ok_or(DialogError::MissingHeader("Call-ID"))?;
        let local_uri = invite
            .headers
            .get("From")
            .ok_or(DialogError::MissingHeader("From"))?;
        let local_tag = invite.from_tag().ok_or(DialogError::MissingFromTag)?;
        let remote_uri = response
            .headers
            .get("To")
            .ok_or(DialogError::MissingHeader("To"))?;
        let remote_tag = response.to_tag().ok_or(DialogError::MissingToTag)?;
        let remote_target = match response.contact_uri() {
            Some(c) => c,
            None if response.is_provisional() => invite.uri.as_str(),
            None => return Err(DialogError::MissingHeader("Contact")),
        };
        let local_contact = invite
            .contact_uri()
            .ok_or(DialogError::MissingHeader("Contact"))?;
        let (cseq, _) = invite.cseq().ok_or(DialogError::MissingHeader("CSeq"))?;
        let via = invite.top_via().ok_or(DialogError::MissingHeader("Via"))?;
        let mut route_set: Vec<String> = response
            .headers
            .get_all("Record-Route")
            .flat_map(split_list)
            .map(str::to_owned)
            .collect();
        route_set.reverse();
        Ok(Dialog {
            call_id: call_id.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: remote_tag.to_owned(),
            local_uri: local_uri.to_owned(),
            remote_uri: remote_uri.to_owned(),
            remote_target: remote_target.to_owned(),
            route_set,
            local_contact: local_contact.to_owned(),
            via_transport: via.transport.to_ascii_uppercase(),
            via_sent_by: via.sent_by(),
            local_cseq: cseq,
            last_invite_cseq: cseq,
            // The peer has sent nothing yet (RFC 3261 12.1.2: remote sequence empty).
            remote_cseq: 0,
        })
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn local_tag(&self) -> &str {
        &self.local_tag
    }

    pub fn remote_tag(&self) -> &str {
        &self.remote_tag
    }

    /// Where in-dialog requests are addressed (the peer's Contact).
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// The Record-Route entries learned from the INVITE, in order.
    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    /// Highest CSeq seen from the peer; requests below it are out of order (RFC 3261 12.2.2).
    pub fn remote_cseq(&self) -> u32 {
        self.remote_cseq
    }

    /// Records an in-dialog request from the peer; returns false when its CSeq is lower than
    /// one already seen, which the TU should answer with 500.
    pub fn accept_remote_cseq(&mut self, cseq: u32) -> bool {
        if cseq < self.remote_cseq {
            return false;
        }
        self.remote_cseq = cseq;
        true
    }

    /// Replaces the remote target after a target refresh from the peer (a re-INVITE or
    /// UPDATE with a new Contact, or its 2xx), RFC 3261 12.2.
    pub fn set_remote_target(&mut self, uri: &str) {
        self.remote_target = uri.to_owned();
    }

    /// Builds an in-dialog request (RFC 3261 12.2.1.1): Request-URI and Route from the route
    /// set, a new Via branch, Max-Forwards 70, the next local CSeq. ACK and CANCEL reuse the
    /// CSeq number of our last INVITE. A target refresh (INVITE, UPDATE) carries our Contact.
    pub fn request(&mut self, method: Method) -> Request {
        let cseq = match method {
            Method::Ack | Method::Cancel => self.last_invite_cseq,
            _ => {
                self.local_cseq += 1;
                if method == Method::Invite {
                    self.last_invite_cseq = self.local_cseq;
                }
                self.local_cseq
            }
        };
        self.build(method, cseq)
    }

    /// The ACK for a 2xx to our INVITE with CSeq number `invite_cseq` (RFC 3261 13.2.2.4):
    /// routed like any in-dialog request, its own branch, the INVITE's CSeq number. It goes
    /// out with [`crate::Endpoint::send_ack`]; keep it and send the same bytes again for
    /// every retransmitted 2xx.
    pub fn ack(&self, invite_cseq: u32) -> Request {
        self.build(Method::Ack, invite_cseq)
    }

    fn build(&self, method: Method, cseq: u32) -> Request {
        let (uri, routes) = self.uri_and_routes();
        let mut req = Request::new(method.clone(), uri);
        let h = &mut req.headers;
        h.push(
            "Via",
            format!(
                "SIP/2.0/{} {};branch={};rport",
                self.via_transport,
                self.via_sent_by,
                new_branch()
            ),
        );
        h.push("Max-Forwards", "70");
        for r in routes {
            h.push("Route", r);
        }
        h.push("From", self.local_uri.clone());
        h.push("To", self.remote_uri.clone());
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{cseq} {method}"));
        if matches!(
            method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
        ) {
            h.push("Contact", format!("<{}>", self.local_contact));
        }
        req
    }

    /// The transport address of the next hop for in-dialog requests: the first Route if there
    /// is a route set, else the remote target. Only IP literals resolve (hostnames give `None`;
    /// DNS is the binary's business); the port defaults to the transport's (5060, 5061 for TLS).
    pub fn remote_target_peer(&self, transport: Transport) -> Option<Peer> {
        let next = match self.route_set.first() {
            Some(route) => split_name_addr(route).0,
            None => self.remote_target.as_str(),
        };
        let (host, port) = uri_host_port(next)?;
        let ip: IpAddr = host.parse().ok()?;
        Some(Peer {
            transport,
            addr: SocketAddr::new(ip, port.unwrap_or(transport.default_port())),
        })
    }

    fn uri_and_routes(&self) -> (String, Vec<String>) {
        let Some(first) = self.route_set.first() else {
            return (self.remote_target.clone(), Vec::new());
        };
        let (first_uri, _) = split_name_addr(first);
        let loose = first_uri
            .split_once(';')
            .is_some_and(|(_, params)| param(params, "lr").is_some());
        if loose {
            return (self.remote_target.clone(), self.route_set.clone());
        }
        // Strict routing (RFC 2543 proxies): the first route becomes the Request-URI and the
        // remote target goes last in Route.
        let mut routes: Vec<String> = self.route_set[1..].to_vec();
        routes.push(format!("<{}>", self.remote_target));
        (first_uri.to_owned(), routes)
    }
}

/// A From or To value for a user we name ourselves: the display name quoted (RFC 3261
/// quoted-string) and the user part percent-escaped where the grammar does not allow a
/// character, so a caller id such as `webrtc:192.0.2.7` does not read as `user:password`.
pub fn name_addr(display: &str, user: &str, host: &str) -> String {
    let quoted: String = display
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => vec![],
            c => vec![c],
        })
        .collect();
    let mut escaped = String::with_capacity(user.len());
    for b in user.bytes() {
        // unreserved and user-unreserved (RFC 3261 25.1)
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            escaped.push(b as char);
        } else {
            escaped.push_str(&format!("%{b:02X}"));
        }
    }
    format!("\"{quoted}\" <sip:{escaped}@{host}>")
}

/// The socket address of a SIP URI whose host is an IP literal (port 5060 when absent, 5061
/// for a `sips:` URI or one with `transport=tls`).
pub fn uri_socket_addr(uri: &str) -> Option<SocketAddr> {
    let transport = uri_transport(uri);
    let (uri, _) = split_name_addr(uri);
    let (host, port) = uri_host_port(uri)?;
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(
        ip,
        port.unwrap_or(transport.default_port()),
    ))
}

/// The transport a URI asks for: TLS for `sips:` or `;transport=tls`, TCP for
/// `;transport=tcp`, else UDP. Given a bare URI, its parameters are the URI's; given a
/// name-addr, only what is inside the angle brackets counts.
pub fn uri_transport(uri: &str) -> Transport {
    let uri = if uri.contains('<') {
        split_name_addr(uri).0
    } else {
        uri.trim()
    };
    if uri
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("sips:"))
    {
        return Transport::Tls;
    }
    let params = uri
        .split_once(';')
        .map_or("", |(_, p)| p.split(['?', '>']).next().unwrap_or(""));
    match param(params, "transport") {
        Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        _ => Transport::Udp,
    }
}

/// What verde needs to start a call to a phone (an agent's registered Contact): see
/// [`OutboundInvite::build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundInvite<'a> {
    /// The Request-URI: the binding's Contact URI.
    pub target: &'a str,
    /// Our identity as a From value without tag, e.g. `"Coda 800" <sip:queue@verde.example>`.
    pub from: &'a str,
    /// The callee's address-of-record, e.g. `<sip:agent1@verde.example>`.
    pub to: &'a str,
    /// The Contact URI we advertise; its host and port also become the Via sent-by.
    pub local_contact: &'a str,
    /// The transport the INVITE goes out on (the binding's source transport), for the Via.
    pub transport: Transport,
}

impl OutboundInvite<'_> {
    /// A dialog-creating INVITE (RFC 3261 8.1.1): new From tag, Call-ID and Via branch,
    /// CSeq 1, Max-Forwards 70, our Contact, no body. Add the SDP offer with
    /// [`Request::with_body`] and headers such as `Call-Info: <sip:...>;answer-after=0` or
    /// `Alert-Info` with [`Request::with_header`], then hand it to
    /// [`crate::Endpoint::send_request`] and found the dialog with [`Dialog::uac`].
    pub fn build(&self) -> Request {
        let contact = split_name_addr(self.local_contact).0;
        let sent_by = sent_by_of(contact);
        let host = uri_host_port(contact).map_or("verde", |(h, _)| h);
        let mut req = Request::new(Method::Invite, self.target);
        let h = &mut req.headers;
        h.push(
            "Via",
            format!(
                "SIP/2.0/{} {sent_by};branch={};rport",
                self.transport,
                new_branch()
            ),
        );
        h.push("Max-Forwards", "70");
        h.push("From", format!("{};tag={}", self.from.trim(), new_tag()));
        h.push("To", self.to.trim().to_owned());
        h.push("Call-ID", new_call_id(host));
        h.push("CSeq", "1 INVITE");
        h.push("Contact", format!("<{contact}>"));
        req
    }
}

/// Via sent-by (`host[:port]`, IPv6 bracketed) for a Contact URI; empty when unparsable.
fn sent_by_of(contact_uri: &str) -> String {
    uri_host_port(contact_uri)
        .map(|(h, p)| match (h.contains(':'), p) {
            (true, Some(p)) => format!("[{h}]:{p}"),
            (true, None) => format!("[{h}]"),
            (false, Some(p)) => format!("{h}:{p}"),
            (false, None) => h.to_owned(),
        })
        .unwrap_or_default()
}

/// `host` and `port` of a SIP URI such as `sip:user;npdi@[::1]:5070;transport=udp`.
pub(crate) fn uri_host_port(uri: &str) -> Option<(&str, Option<u16>)> {
    let uri = uri.trim();
    let (scheme, rest) = uri.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return None;
    }
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    crate::message::split_host_port(&rest[..end])
}

/// A random From/To tag.
pub fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A random RFC 3261 branch (`z9hG4bK` magic cookie plus 64 random bits).
pub fn new_branch() -> String {
    format!("z9hG4bK{:016x}", rand::random::<u64>())
}

/// A random Call-ID, `<128 random bits>@host`.
pub fn new_call_id(host: &str) -> String {
    format!("{:032x}@{host}", rand::random::<u128>())
}

#[cfg(test)]
mod tests;
