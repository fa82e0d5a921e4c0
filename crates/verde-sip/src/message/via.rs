use std::fmt;

/// One Via entry: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token as written (`UDP`, `TCP`, ...).
    pub transport: String,
    /// sent-by host (IPv6 literals without brackets).
    pub host: String,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// Parameters in order; `None` for valueless ones such as a bare `rport`.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// A Via for a request we send.
    pub fn new(transport: &str, host: &str, port: Option<u16>, branch: &str) -> Via {
        Via {
            transport: transport.to_owned(),
            host: host.trim_matches(|c| c == '[' || c == ']').to_owned(),
            port,
            params: vec![("branch".to_owned(), Some(branch.to_owned()))],
        }
    }

    /// Parses one Via entry (not a comma-separated list).
    pub fn parse(value: &str) -> Option<Via> {
        let (protocol, rest) = value.trim().split_once('/')?;
        if !protocol.trim().eq_ignore_ascii_case("SIP") {
            return None;
        }
        let (_version, rest) = rest.split_once('/')?;
        let rest = rest.trim_start();
        let end = rest.find(char::is_whitespace)?;
        let transport = rest[..end].to_owned();
        let mut parts = rest[end..].split(';');
        let sent_by = parts.next()?.trim();
        let (host, port) = split_host_port(sent_by)?;
        let params = parts
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n.trim().to_owned(), Some(v.trim().to_owned())),
                None => (p.to_owned(), None),
            })
            .collect();
        Some(Via {
            transport,
            host: host.to_owned(),
            port,
            params,
        })
    }

    /// A parameter's value; `Some("")` when present without a value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Sets (or adds) a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(p) => p.1 = value,
            None => self.params.push((name.to_owned(), value)),
        }
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").filter(|b| !b.is_empty())
    }

    pub fn received(&self) -> Option<&str> {
        self.param("received").filter(|r| !r.is_empty())
    }

    /// Whether the client asked for RFC 3581 symmetric response routing.
    pub fn has_rport(&self) -> bool {
        self.param("rport").is_some()
    }

    /// The `rport` value once filled in by the server.
    pub fn rport(&self) -> Option<u16> {
        self.param("rport")?.parse().ok()
    }

    /// `host:port` as written, used in transaction keys (RFC 3261 17.2.3).
    /// The address this hop's packets came from as the next proxy saw it: `received` when
    /// the proxy wrote one, else an IP-literal sent-by; None for a host name (unverifiable).
    pub fn source_ip(&self) -> Option<std::net::IpAddr> {
        self.received()
            .and_then(|r| r.trim_matches(|c| c == '[' || c == ']').parse().ok())
            .or_else(|| self.host.parse().ok())
    }

    pub fn sent_by(&self) -> String {
        let mut s = String::with_capacity(self.host.len() + 8);
        push_host(&mut s, &self.host);
        if let Some(p) = self.port {
            s.push(':');
            s.push_str(&p.to_string());
        }
        s
    }
}

fn push_host(s: &mut String, host: &str) {
    if host.contains(':') {
        s.push('[');
        s.push_str(host);
        s.push(']');
    } else {
        s.push_str(host);
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.sent_by())?;
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// Splits `host[:port]` / `[v6][:port]`. Returns the host without brackets.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.trim().parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.split_once(':') {
        Some((h, p)) => Some((h, Some(p.trim().parse().ok()?))),
        None => Some((s, None)),
    }
}
