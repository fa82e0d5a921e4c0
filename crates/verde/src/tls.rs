//! TLS for the engine's own listeners: SIP over TLS (`sip.tls`, usually port 5061) and HTTPS
//! with WSS (`http.tls`), as an alternative to a TLS proxy in front.
//!
//! rustls with the ring provider (already built for WebRTC's DTLS), TLS 1.2 and 1.3, no client
//! certificates. Certificates are PEM files read once at start: a renewed certificate takes a
//! restart. Every handshake runs under [`HANDSHAKE_DEADLINE`], so a peer that connects and never
//! speaks TLS cannot hold a connection slot for long; what runs over the connection afterwards
//! (SIP framing and its deadlines, HTTP) is the same code as on plain TCP.

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a connection may take to complete its TLS handshake. A phone on a slow mobile link
/// needs a few round trips; a peer still silent after this is cut.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// HTTPS handshakes in progress at once; past it the accept loop waits (the kernel's backlog
/// holds the rest), so a flood of silent connections costs tasks only up to this. Each one is
/// a few kilobytes, and is cut at the deadline.
const MAX_PENDING_HANDSHAKES: usize = 2048;

/// Failed SIP handshakes logged per second at most (a scanner or a flood of junk connections
/// must not fill the log); the next line logged says how many were left out.
const FAILURE_LOGS_PER_S: u32 = 10;

/// A server configuration from a PEM certificate chain (the server's certificate first) and a
/// PEM private key (PKCS#8, PKCS#1 or SEC1). `alpn` lists the protocols offered (HTTP says
/// `http/1.1`; SIP has none). Errors name the file at fault.
pub fn acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            anyhow!(
                "cannot read TLS certificate {}: {}",
                cert.display(),
                pem_error(e)
            )
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("TLS certificate {}: {}", cert.display(), pem_error(e)))?;
    if chain.is_empty() {
        bail!(
            "TLS certificate {}: no CERTIFICATE block in the file",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "TLS key {}: no PRIVATE KEY block in the file",
            key.display()
        ),
        e => anyhow!("cannot read TLS key {}: {}", key.display(), pem_error(e)),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS 1.2 and 1.3 with the ring provider")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "TLS certificate {} and key {} are not a usable pair",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn pem_error(e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "no PEM block in the file".into(),
        e => format!("not valid PEM ({e})"),
    }
}

/// The server side of a TLS handshake, given up after [`HANDSHAKE_DEADLINE`].
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> io::Result<TlsStream<TcpStream>> {
    handshake_within(acceptor, stream, HANDSHAKE_DEADLINE).await
}

async fn handshake_within(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "TLS handshake not completed within {} ms",
                deadline.as_millis()
            ),
        )),
    }
}

/// Logs a failed SIP handshake, at most [`FAILURE_LOGS_PER_S`] lines a second.
pub fn log_sip_handshake_failure(peer: SocketAddr, error: &io::Error) {
    static LOG: std::sync::Mutex<Option<(std::time::Instant, u32, u64)>> =
        std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let Ok(mut log) = LOG.lock() else {
        return;
    };
    let (second, logged, skipped) = log.get_or_insert((now, 0, 0));
    if now.saturating_duration_since(*second) >= Duration::from_secs(1) {
        (*second, *logged) = (now, 0);
    }
    if *logged < FAILURE_LOGS_PER_S {
        *logged += 1;
        let suppressed = std::mem::take(skipped);
        tracing::warn!(%peer, %error, suppressed, "SIP TLS handshake failed; connection closed");
    } else {
        *skipped += 1;
    }
}

/// HTTPS for axum: a TCP listener whose connections are handed to the server once their
/// handshake is done. Handshakes run concurrently, each in its own task, so a slow or silent
/// client never delays the others.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
            loop {
                let Ok(permit) = pending.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "https accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match handshake(&acceptor, stream).await {
                        Ok(tls) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        // Scanners and plain-HTTP clients: not worth a warning each.
                        Err(e) => tracing::debug!(%peer, error = %e, "https handshake failed"),
                    }
                    drop(permit);
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task has ended (its listener failed for good): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Files {
        dir: std::path::PathBuf,
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        der: CertificateDer<'static>,
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn files(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("verde-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        Files {
            dir,
            cert,
            key,
            der: ck.cert.der().clone(),
        }
    }

    fn client(
        root: CertificateDer<'static>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    fn error(r: Result<TlsAcceptor>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let f = files("errors");
        let missing = f.dir.join("nowhere.pem");
        let err = error(acceptor(&missing, &f.key, &[]));
        assert!(err.contains("nowhere.pem"), "{err}");
        // A key given as the certificate: no CERTIFICATE in it.
        let err = error(acceptor(&f.key, &f.key, &[]));
        assert!(
            err.contains("key.pem") && err.contains("CERTIFICATE"),
            "{err}"
        );
        let err = error(acceptor(&f.cert, &f.cert, &[]));
        assert!(
            err.contains("cert.pem") && err.contains("PRIVATE KEY"),
            "{err}"
        );
        // The key of another certificate.
        let other = files("errors-other");
        let err = error(acceptor(&f.cert, &other.key, &[]));
        assert!(err.contains("not a usable pair"), "{err}");
        assert!(acceptor(&f.cert, &f.key, &[b"http/1.1"]).is_ok());
    }

    #[tokio::test]
    async fn tls12_and_tls13_clients_complete_the_handshake() {
        let f = files("versions");
        let acc = acceptor(&f.cert, &f.key, &[]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (version, expect) in [
            (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        ] {
            let connector = client(f.der.clone(), version);
            let dial = async {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut s = connector.connect(name, tcp).await.unwrap();
                s.write_all(b"ping").await.unwrap();
                s.flush().await.unwrap();
                s
            };
            let serve = async {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut s = handshake(&acc, tcp).await.unwrap();
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.unwrap();
                (s.get_ref().1.protocol_version(), buf)
            };
            let (_client, (got, buf)) = tokio::join!(dial, serve);
            assert_eq!(got, Some(expect));
            assert_eq!(&buf, b"ping");
        }
    }

    #[tokio::test]
    async fn a_silent_peer_is_cut_at_the_handshake_deadline() {
        let f = files("silent");
        let acc = acceptor(&f.cert, &f.key, &[]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _silent = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let deadline = Duration::from_millis(300);
        let start = std::time::Instant::now();
        let err = handshake_within(&acc, tcp, deadline).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = start.elapsed();
        assert!(took >= deadline && took < deadline * 5, "{took:?}");
    }
}
