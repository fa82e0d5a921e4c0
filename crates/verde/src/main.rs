//! The verde telephony engine: configuration, wiring and the tokio layer.
//!
//! Everything that decides (SIP transactions, media timing, the IVR) lives in sans-IO crates;
//! this binary owns what touches the world: sockets, timers, the clock, files, signals. It runs
//! one task for the SIP transports and transaction layer ([`sip_core`]), one task per call
//! ([`call`]), the HTTP server ([`http`]) and the flow watcher ([`flows`]); the journal of
//! answered dialogs ([`dialogs`]) lets a start after a crash end and record the calls left up.

mod accounts;
mod acd_task;
mod agent_leg;
mod call;
mod clock;
mod config;
mod cti;
mod dialer;
mod dialogs;
mod flows;
mod http;
mod live_stats;
mod metrics;
mod records;
mod reload;
mod reports;
mod rtp_ports;
mod sip_core;
mod tls;
mod web;
mod web_call;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::{Config, PortRange};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "verde",
    version,
    about = "verde: a telephony engine for toll-free contact centers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file overlaid on the embedded defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// SIP address for UDP and TCP (default 0.0.0.0:5060).
    #[arg(long)]
    sip: Option<SocketAddr>,
    /// HTTP address (default 0.0.0.0:8080).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Data folder for the embedded store (default ./data).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// Address written in SDP (default: the SIP address).
    #[arg(long)]
    media_ip: Option<IpAddr>,
    /// RTP port range, LOW-HIGH.
    #[arg(long)]
    rtp_ports: Option<PortRange>,
    /// Port range of browser legs (webrtc.ports), LOW-HIGH.
    #[arg(long)]
    webrtc_ports: Option<PortRange>,
    /// Folder of IVR flows (default ./ivr-flows).
    #[arg(long, global = true)]
    flows: Option<PathBuf>,
    /// Folder of prompts (default ./sounds).
    #[arg(long)]
    sounds: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Start the engine's wall clock at this RFC 3339 instant (it then runs normally): for
    /// tests and demos of opening hours. Never in production.
    #[arg(long, hide = true)]
    wall_clock: Option<chrono::DateTime<chrono::FixedOffset>>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate every flow; print `file:line: reason` for each error and exit non-zero if any.
    CheckFlows {
        /// Flows folder (default: the configured one).
        dir: Option<PathBuf>,
        /// Prompts folder used to check prompt references (default: the configured one).
        #[arg(long)]
        sounds: Option<PathBuf>,
    },
    /// Print the KPIs and SLAs of a period (docs/kpi.md), from the store in the data folder.
    Report(reports::ReportArgs),
    /// Write the call records (or the queue log) of a period as CSV, for office suites.
    Export(reports::ExportArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("verde: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The file, then the command line's overrides: at start and again on each SIGHUP.
fn config_source(cli: &Cli) -> reload::ConfigSource {
    let path = cli.config.clone();
    let (sip, http, data, media_ip) = (cli.sip, cli.http, cli.data.clone(), cli.media_ip);
    let (rtp, webrtc, flows, sounds) = (
        cli.rtp_ports,
        cli.webrtc_ports,
        cli.flows.clone(),
        cli.sounds.clone(),
    );
    Arc::new(move || {
        let mut cfg = Config::load(path.as_deref())?;
        if let Some(a) = sip {
            cfg.sip.listen = a;
        }
        if let Some(a) = http {
            cfg.http.listen = a;
        }
        if let Some(d) = &data {
            cfg.data = d.clone();
        }
        if let Some(ip) = media_ip {
            cfg.media.ip = Some(ip);
        }
        if let Some(r) = rtp {
            cfg.media.rtp_ports = r;
        }
        if let Some(r) = webrtc {
            cfg.webrtc.ports = r;
        }
        if let Some(f) = &flows {
            cfg.flows = f.clone();
        }
        if let Some(s) = &sounds {
            cfg.sounds = s.clone();
        }
        cfg.check_overrides()?;
        Ok(cfg)
    })
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let source = config_source(&cli);
    let cfg = source()?;

    if let Some(Command::CheckFlows { dir, sounds }) = cli.command {
        let dir = dir.unwrap_or(cfg.flows.clone());
        let sounds = sounds.unwrap_or(cfg.sounds.clone());
        return Ok(flows::check_flows_cli(&dir, &sounds));
    }
    if let Some(Command::Report(_) | Command::Export(_)) = &cli.command {
        init_cli_tracing();
        if let Some(t) = cli.wall_clock {
            clock::set_start(t.with_timezone(&chrono::Utc));
        }
        match &cli.command {
            Some(Command::Report(args)) => reports::report_cli(&cfg, args)?,
            Some(Command::Export(args)) => reports::export_cli(&cfg, args)?,
            _ => {}
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }

    init_tracing(cli.log_json);
    if let Some(t) = cli.wall_clock {
        clock::set_start(t.with_timezone(&chrono::Utc));
        tracing::warn!(wall_clock = %t, "wall clock set by --wall-clock: schedules use simulated time");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(serve(cfg, source))?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    // rtc's handshakes warn about what browsers routinely send (unknown DTLS extensions, checks
    // before candidates are known): kept for VERDE_LOG=debug, not for every call's log.
    let filter = EnvFilter::try_from_env("VERDE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rtc_dtls=error,rtc_ice=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Report and export print their result on stdout: only warnings (records left out, times
/// exported as stored) go to stderr. The flows' own warnings (missing recordings) are the
/// engine's business, not the report's.
fn init_cli_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("VERDE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,verde_ivr=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Each call holds up to four sockets (RTP and RTCP for the caller and for an agent leg):
/// more calls than the descriptor limit allows would fail one by one at their worst moment, so
/// the limit is raised as far as the system lets us and `max_calls` is held below it.
fn fit_max_calls(cfg: &mut Config) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let fit = (limit.saturating_sub(256) / 4).max(1) as usize;
    if cfg.sip.max_calls > fit {
        tracing::warn!(
            max_calls = cfg.sip.max_calls,
            nofile = limit,
            using = fit,
            "sip.max_calls exceeds what the open-file limit allows; raise LimitNOFILE / ulimit -n"
        );
        cfg.sip.max_calls = fit;
    }
}

async fn serve(mut cfg: Config, source: reload::ConfigSource) -> Result<()> {
    fit_max_calls(&mut cfg);
    let running = cfg.clone();
    let cfg = Arc::new(cfg);
    std::fs::create_dir_all(&cfg.data)
        .with_context(|| format!("cannot create data folder {}", cfg.data.display()))?;
    let (store, journal, tasks) = open_store(&cfg)?;
    let prompts = Arc::new(verde_media::PromptCache::load(&cfg.sounds).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!(
            "cannot load prompts from {}:\n{}",
            cfg.sounds.display(),
            lines.join("\n")
        )
    })?);
    tracing::info!(prompts = prompts.len(), dir = %cfg.sounds.display(), "prompts loaded");
    // Replays what an earlier run left in the spool before anything is served.
    let (records, _records_thread) = records::Records::open(store.clone(), &cfg.data.join("spool"));
    // What a crash left up, once the spool's records are in (a call recorded there had ended):
    // recorded now, before anything new is journaled; the BYEs go once the SIP task runs.
    let byes = dialogs::recover(&*journal, &*store, clock::now()).unwrap_or_else(|e| {
        tracing::error!(error = %e,
            "ALARM: the dialog journal cannot be read: calls a crash left up are neither ended nor recorded");
        Vec::new()
    });
    let _journal_thread = dialogs::start(journal, records.clone())?;
    let flows = flows::FlowsHandle::load(&cfg.flows, &cfg.sounds, &cfg.numbers)?;
    let _watcher = flows.watch()?;

    let shutdown = tokio_util_shutdown();
    let media_ip = cfg.media_ip();
    let (cti, cti_runner) = cti::Hub::new(&cfg);
    let acd = acd_task::start(
        cfg.queues.clone(),
        cfg.agents.iter().map(|a| a.acd()).collect(),
        cti.clone(),
        records.clone(),
    )?;
    let engine = Arc::new(sip_core::Engine::new(
        cfg.clone(),
        media_ip,
        flows.clone(),
        prompts,
        records,
        acd,
        cti,
        tasks,
    )?);
    cti_runner.spawn(engine.clone(), store.clone());
    let sip = sip_core::start(engine.clone()).await?;
    dialogs::send_byes(&engine, byes).await;
    dialer::start(engine.clone());
    reports::install(&engine, store.clone());
    let http = http::start(cfg.http.listen, store, engine.clone()).await?;
    tracing::info!(
        sip = %cfg.sip.listen,
        http = %http,
        media_ip = %media_ip,
        flows = %cfg.flows.display(),
        "verde ready"
    );

    // SIGHUP re-reads the configuration (what can change live, see reload.rs) and the flows.
    #[cfg(unix)]
    {
        let flows = flows.clone();
        let engine = engine.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("SIGHUP handler")?;
        tokio::spawn(async move {
            let mut running = running;
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration and the flows");
                let (f, e, s) = (flows.clone(), engine.clone(), source.clone());
                let mut r = running.clone();
                let done = tokio::task::spawn_blocking(move || {
                    reload::config(&e, &mut r, &s);
                    f.reload();
                    r
                });
                match done.await {
                    Ok(r) => running = r,
                    Err(e) => tracing::error!(error = %e, "reload failed"),
                }
            }
        });
    }
    shutdown.await;
    tracing::info!(
        calls = engine.active_calls(),
        grace_s = cfg.shutdown_grace.as_secs(),
        "shutting down: refusing new calls, waiting for calls in progress"
    );
    engine.drain(cfg.shutdown_grace).await;
    sip.abort();
    // Every call task has ended and handed its record over: store them, or spool them when
    // the store is failing (the next start replays the spool).
    engine.records.close().await;
    // And the journal forgets them, so a clean stop leaves nothing for the next start.
    dialogs::flush().await;
    tracing::info!("verde stopped");
    Ok(())
}

type Stores = (
    Arc<dyn verde_store::Store>,
    Arc<dyn verde_store::DialogJournal>,
    Arc<dyn verde_store::TaskStore>,
);

/// The embedded SQLite store in `data`, or PostgreSQL shared with other nodes when
/// `store.postgres` is set. A database that cannot be reached at start is an error: a node
/// must not serve on a store it has never seen (later outages are ridden out by the record
/// writer).
pub(crate) fn open_store(cfg: &Config) -> Result<Stores> {
    if let Some(conninfo) = &cfg.store.postgres {
        let node = cfg.store.node_name();
        let shown = verde_store::redact_conninfo(conninfo);
        // Blocks this thread for at most the connect timeout; the client itself runs on a
        // thread of the store's own.
        let pg = verde_store::PgStore::connect(conninfo, &node)
            .with_context(|| format!("cannot open the PostgreSQL store {shown} as node {node}"))?;
        tracing::info!(store = %shown, %node, "store: PostgreSQL shared by the nodes");
        let pg = Arc::new(pg);
        return Ok((pg.clone(), pg.clone(), pg));
    }
    let sqlite = Arc::new(
        verde_store::SqliteStore::open(&cfg.data.join("verde.db"))
            .context("cannot open the embedded store")?,
    );
    Ok((sqlite.clone(), sqlite.clone(), sqlite))
}

/// Resolves on SIGINT or SIGTERM.
async fn tokio_util_shutdown() {
    {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    }
}
