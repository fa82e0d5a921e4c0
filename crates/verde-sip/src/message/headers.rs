use std::borrow::Cow;

use super::{param, split_list, split_name_addr, Method, Via};

/// Full names and compact forms (RFC 3261 7.3.3 and later RFCs). Parsed headers with one of
/// these names are stored under the full name, so lookups usually compare one string.
const KNOWN: &[(&str, Option<&str>)] = &[
    ("Via", Some("v")),
    ("From", Some("f")),
    ("To", Some("t")),
    ("Call-ID", Some("i")),
    ("CSeq", None),
    ("Contact", Some("m")),
    ("Content-Length", Some("l")),
    ("Content-Type", Some("c")),
    ("Content-Encoding", Some("e")),
    ("Supported", Some("k")),
    ("Subject", Some("s")),
    ("Event", Some("o")),
    ("Allow-Events", Some("u")),
    ("Refer-To", Some("r")),
    ("Referred-By", Some("b")),
    ("Session-Expires", Some("x")),
    ("Max-Forwards", None),
    ("Route", None),
    ("Record-Route", None),
    ("Allow", None),
    ("User-Agent", None),
    ("Server", None),
];

/// The canonical full name for a header name given in any case or compact form.
pub(crate) fn canonical(name: &str) -> Option<&'static str> {
    if name.len() == 1 {
        return KNOWN.iter().find_map(|&(full, compact)| {
            compact
                .is_some_and(|c| name.eq_ignore_ascii_case(c))
                .then_some(full)
        });
    }
    // Comparing lengths first keeps this scan cheap: it runs for every parsed header.
    KNOWN.iter().find_map(|&(full, _)| {
        (full.len() == name.len() && name.eq_ignore_ascii_case(full)).then_some(full)
    })
}

fn compact_of(full: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .find_map(|&(f, c)| if f == full { c } else { None })
}

/// Ordered header list with case-insensitive lookup that understands compact forms: `get("v")`,
/// `get("VIA")` and `get("Via")` all find `v: ...` and `Via: ...` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    list: Vec<(Cow<'static, str>, String)>,
}

/// A header name resolved once per lookup.
struct Wanted<'a> {
    full: &'a str,
    compact: Option<&'static str>,
}

impl Wanted<'_> {
    fn new(name: &str) -> Wanted<'_> {
        match canonical(name) {
            Some(full) => Wanted {
                full,
                compact: compact_of(full),
            },
            None => Wanted {
                full: name,
                compact: None,
            },
        }
    }

    fn matches(&self, stored: &str) -> bool {
        stored.eq_ignore_ascii_case(self.full)
            || self.compact.is_some_and(|c| stored.eq_ignore_ascii_case(c))
    }
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    pub(crate) fn with_capacity(n: usize) -> Headers {
        Headers {
            list: Vec::with_capacity(n),
        }
    }

    /// Appends a header line (kept in order; several lines may share a name).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name: String = name.into();
        let name = match canonical(&name) {
            Some(full) => Cow::Borrowed(full),
            None => Cow::Owned(name),
        };
        self.list.push((name, value.into()));
    }

    /// Used by the codec, which already canonicalized the name.
    pub(crate) fn push_raw(&mut self, name: Cow<'static, str>, value: String) {
        self.list.push((name, value));
    }

    /// Replaces every `name` line with one line at the position of the first (or at the end).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let wanted = Wanted::new(name);
        let value = value.into();
        match self.list.iter().position(|(n, _)| wanted.matches(n)) {
            Some(i) => {
                self.list[i].1 = value;
                let mut j = 0;
                self.list.retain(|(n, _)| {
                    j += 1;
                    j - 1 == i || !wanted.matches(n)
                });
            }
            None => self.push(name.to_owned(), value),
        }
    }

    /// Removes every `name` line; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let wanted = Wanted::new(name);
        let before = self.list.len();
        self.list.retain(|(n, _)| !wanted.matches(n));
        before - self.list.len()
    }

    /// The first `name` line's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        let wanted = Wanted::new(name);
        self.list
            .iter()
            .find(|(n, _)| wanted.matches(n))
            .map(|(_, v)| v.as_str())
    }

    /// Every `name` line's value, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let wanted = Wanted::new(name);
        self.list
            .iter()
            .filter(move |(n, _)| wanted.matches(n))
            .map(|(_, v)| v.as_str())
    }

    /// All lines as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list.iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn approx_len(&self) -> usize {
        self.list.iter().map(|(n, v)| n.len() + v.len() + 4).sum()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID").map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn cseq(&self) -> Option<(u32, Method)> {
        let value = self.get("CSeq")?;
        let mut parts = value.split_whitespace();
        let number = parts.next()?.parse().ok()?;
        let method = Method::from_token(parts.next()?);
        parts.next().is_none().then_some((number, method))
    }

    pub fn top_via(&self) -> Option<Via> {
        Via::parse(split_list(self.get("Via")?).next()?)
    }

    /// Where a request relayed by one proxy came from: the second Via's source address. Only
    /// meaningful when the packet's own source is a proxy we trust (Via is the sender's word).
    pub fn relayed_source(&self) -> Option<std::net::IpAddr> {
        Via::parse(self.vias().nth(1)?)?.source_ip()
    }

    /// Every Via entry, including several entries folded onto one line.
    pub fn vias(&self) -> impl Iterator<Item = &str> {
        self.get_all("Via").flat_map(split_list)
    }

    pub fn from_tag(&self) -> Option<&str> {
        tag_of(self.get("From")?)
    }

    pub fn to_tag(&self) -> Option<&str> {
        tag_of(self.get("To")?)
    }

    pub fn contact_uri(&self) -> Option<&str> {
        let first = split_list(self.get("Contact")?).next()?;
        let (uri, _) = split_name_addr(first);
        (!uri.is_empty() && uri != "*").then_some(uri)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type").map(str::trim)
    }

    /// Max-Forwards, if present and numeric.
    pub fn max_forwards(&self) -> Option<u32> {
        self.get("Max-Forwards")?.trim().parse().ok()
    }

    /// Replaces the first Via entry, keeping any other entries on the same line.
    pub(crate) fn set_top_via(&mut self, via: &Via) {
        let wanted = Wanted::new("Via");
        if let Some((_, value)) = self.list.iter_mut().find(|(n, _)| wanted.matches(n)) {
            let rest: Vec<&str> = split_list(value).skip(1).collect();
            let mut new = via.to_string();
            for r in rest {
                new.push_str(", ");
                new.push_str(r);
            }
            *value = new;
        }
    }

    pub(crate) fn add_to_tag(&mut self, tag: &str) {
        let wanted = Wanted::new("To");
        if let Some((_, value)) = self.list.iter_mut().find(|(n, _)| wanted.matches(n)) {
            if tag_of(value).is_none() {
                value.push_str(";tag=");
                value.push_str(tag);
            }
        }
    }
}

fn tag_of(value: &str) -> Option<&str> {
    let (_, params) = split_name_addr(value);
    param(params, "tag").filter(|t| !t.is_empty())
}
