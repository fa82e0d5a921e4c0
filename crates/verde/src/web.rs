//! The agent bar (`/agent`, with its browser softphone), the supervisor's wallboard
//! (`/wallboard`), KPI reports (`/reports`) and the public "call now" page (`/call/{did}`, served
//! through [`call_page`]) with its embeddable button: static pages built into the binary, so an installation is one file and nothing
//! is read from disk at runtime. The pages speak the CTI websocket (`docs/cti-protocol.md`) and
//! read `/api/agents`, `/api/queues`, `/api/reports` and `/api/export.csv`; this module serves
//! their bytes and mounts the report endpoints of [`crate::reports`], and knows nothing of calls
//! or agents.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The pages hold a session token: no inline script, no foreign origin, no framing.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const AGENT_PAGE: &str = include_str!("../web/agent.html");
const WALLBOARD_PAGE: &str = include_str!("../web/wallboard.html");
const REPORTS_PAGE: &str = include_str!("../web/reports.html");
const CALL_PAGE: &str = include_str!("../web/call.html");

/// Everything under `/static/`, by file name.
const STATIC: &[Asset] = &[
    Asset {
        name: "verde.css",
        content_type: CSS,
        body: include_str!("../web/verde.css"),
    },
    Asset {
        name: "i18n.js",
        content_type: JS,
        body: include_str!("../web/i18n.js"),
    },
    Asset {
        name: "cti.js",
        content_type: JS,
        body: include_str!("../web/cti.js"),
    },
    Asset {
        name: "common.js",
        content_type: JS,
        body: include_str!("../web/common.js"),
    },
    Asset {
        name: "agent.js",
        content_type: JS,
        body: include_str!("../web/agent.js"),
    },
    Asset {
        name: "wallboard.js",
        content_type: JS,
        body: include_str!("../web/wallboard.js"),
    },
    Asset {
        name: "reports.js",
        content_type: JS,
        body: include_str!("../web/reports.js"),
    },
    Asset {
        name: "call.js",
        content_type: JS,
        body: include_str!("../web/call.js"),
    },
    Asset {
        name: "call-button.js",
        content_type: JS,
        body: include_str!("../web/call-button.js"),
    },
    Asset {
        name: "softphone.js",
        content_type: JS,
        body: include_str!("../web/softphone.js"),
    },
];

/// The public "call now" page (`/call/{did}`); the caller decides which numbers have one.
pub fn call_page() -> Response {
    page(CALL_PAGE)
}

/// Routes for the pages, their files and the report endpoints; merge it into the HTTP router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/agent", get(|| async { page(AGENT_PAGE) }))
        .route("/wallboard", get(|| async { page(WALLBOARD_PAGE) }))
        .route("/reports", get(|| async { page(REPORTS_PAGE) }))
        .route("/static/{file}", get(static_file))
        .merge(crate::reports::router(crate::reports::installed()))
}

fn static_asset(name: &str) -> Option<&'static Asset> {
    STATIC.iter().find(|a| a.name == name)
}

async fn static_file(Path(file): Path<String>) -> Response {
    static_response(&file)
}

fn static_response(name: &str) -> Response {
    match static_asset(name) {
        Some(asset) => respond(asset.content_type, asset.body),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

fn page(body: &'static str) -> Response {
    let mut resp = respond(HTML, body);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}

// `no-cache` (revalidate, not "never store") so an upgraded binary's pages show up at the next
// load without a hard refresh.
fn respond(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The values of `attr` in every `<tag ...>` of an HTML text.
    fn attr_values(html: &str, tag: &str, attr: &str) -> Vec<String> {
        let open = format!("<{tag}");
        let needle = format!(" {attr}=\"");
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find(&open) {
            let after = &rest[start + open.len()..];
            let end = after.find('>').expect("unterminated tag");
            let tag_text = &after[..end];
            if let Some(a) = tag_text.find(&needle) {
                let value = &tag_text[a + needle.len()..];
                out.push(value[..value.find('"').expect("unterminated attribute")].to_string());
            }
            rest = &after[end..];
        }
        out
    }

    /// Relative module imports (`from './x.js'`) of a script.
    fn imports(js: &str) -> Vec<String> {
        js.split("from './")
            .skip(1)
            .map(|s| s[..s.find('\'').expect("unterminated import")].to_string())
            .collect()
    }

    fn referenced() -> Vec<String> {
        let mut refs = Vec::new();
        for html in [AGENT_PAGE, WALLBOARD_PAGE, REPORTS_PAGE, CALL_PAGE] {
            refs.extend(attr_values(html, "script", "src"));
            refs.extend(attr_values(html, "link", "href"));
        }
        refs
    }

    #[test]
    fn every_file_the_pages_reference_is_served() {
        let refs = referenced();
        assert!(refs.iter().any(|r| r == "/static/agent.js"), "{refs:?}");
        assert!(refs.iter().any(|r| r == "/static/wallboard.js"), "{refs:?}");
        assert!(refs.iter().any(|r| r == "/static/reports.js"), "{refs:?}");
        assert!(refs.iter().any(|r| r == "/static/call.js"), "{refs:?}");
        for r in refs.iter().filter(|r| !r.starts_with("data:")) {
            let name = r
                .strip_prefix("/static/")
                .unwrap_or_else(|| panic!("{r} is not under /static/"));
            let resp = static_response(name);
            assert_eq!(resp.status(), StatusCode::OK, "{r}");
            let ct = resp.headers()[header::CONTENT_TYPE].to_str().unwrap();
            let want = if name.ends_with(".css") { CSS } else { JS };
            assert_eq!(ct, want, "{r}");
            assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache", "{r}");
        }
    }

    #[test]
    fn every_module_import_is_served() {
        let mut seen = 0;
        for asset in STATIC.iter().filter(|a| a.name.ends_with(".js")) {
            for dep in imports(asset.body) {
                seen += 1;
                assert!(static_asset(&dep).is_some(), "{} imports {dep}", asset.name);
            }
        }
        assert!(seen > 0, "no imports found: the scan is broken");
    }

    #[test]
    fn unknown_names_are_not_found() {
        for name in ["nope.js", "../Cargo.toml", "agent.html", "", "VERDE.CSS"] {
            assert_eq!(
                static_response(name).status(),
                StatusCode::NOT_FOUND,
                "{name}"
            );
        }
    }

    async fn get_raw(addr: std::net::SocketAddr, path: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn router_serves_pages_and_files_by_path() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router::<()>()).await });

        let agent = get_raw(addr, "/agent").await.to_ascii_lowercase();
        assert!(agent.starts_with("http/1.1 200"), "{agent}");
        assert!(agent.contains("content-type: text/html; charset=utf-8"));
        assert!(agent.contains("cache-control: no-cache"));
        assert!(agent.contains("content-security-policy:"));
        assert!(agent.contains("id=\"login-form\""));

        let board = get_raw(addr, "/wallboard").await;
        assert!(board.starts_with("HTTP/1.1 200"), "{board}");
        assert!(board.contains("id=\"wait-chart\""));

        let reports = get_raw(addr, "/reports").await;
        assert!(reports.starts_with("HTTP/1.1 200"), "{reports}");
        for id in [
            "wait-dist-chart",
            "hourly-chart",
            "sl-chart",
            "btn-csv",
            "btn-queue-log",
        ] {
            assert!(
                reports.contains(&format!("id=\"{id}\"")),
                "/reports lacks #{id}"
            );
        }

        for r in referenced().iter().filter(|r| !r.starts_with("data:")) {
            let resp = get_raw(addr, r).await;
            assert!(resp.starts_with("HTTP/1.1 200"), "{r}: {resp}");
        }
        let missing = get_raw(addr, "/static/missing.js").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        server.abort();
    }
}
