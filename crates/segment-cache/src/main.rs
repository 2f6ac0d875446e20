//! `segment-cache`: parses configuration and flags, and wires the parts of the library together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use segment_cache::config::{Capacity, Config, ConfigError, ReadAheadFields};
use segment_cache::retry::RetryPolicy;
use segment_cache::s3::{BucketAccess, CacheS3, MissParts, ReadAhead, SingleKeyAuth};
use segment_cache::store::{Store, StoreOptions};
use segment_cache::telemetry::{self, Readiness};
use segment_cache::upstream::{Upstream, build_client};
use segment_cache::warm::{self, Sources, WarmOptions};

#[derive(Parser)]
#[command(
    name = "segment-cache",
    version,
    about = "NVMe read-through S3 cache for Milvus query nodes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the S3 endpoint (and warm in the background).
    Serve(Common),
    /// Warm the cache once and exit (for an init container).
    Warm(WarmArgs),
    /// Validate the configuration file and exit (0 valid, 2 invalid).
    CheckConfig(Common),
    /// Print `name kind` for every metric this binary exports, one a line: what the Grafana
    /// contract test reads instead of a hand copy.
    #[command(hide = true)]
    MetricNames,
}

#[derive(Args)]
struct Common {
    /// The YAML configuration file.
    #[arg(long, env = "SEGMENT_CACHE_CONFIG")]
    config: PathBuf,
    /// Overrides `listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Overrides `cache.dir`.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Overrides `cache.capacity` (e.g. 400GiB, or 90% of the filesystem).
    #[arg(long)]
    capacity: Option<Capacity>,
    /// Overrides `upstream.endpoint_url`.
    #[arg(long)]
    upstream_endpoint: Option<String>,
    /// Overrides `upstream.bucket`.
    #[arg(long)]
    bucket: Option<String>,
    /// Overrides `telemetry.listen`.
    #[arg(long)]
    telemetry_listen: Option<SocketAddr>,
    /// Overrides `warm.concurrency`.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Overrides `auth.secret_key` (keep it out of the config file).
    #[arg(long, env = "SEGMENT_CACHE_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
}

#[derive(Args)]
struct WarmArgs {
    #[command(flatten)]
    common: Common,
    /// Extra prefixes to warm (added to `warm.prefixes`).
    #[arg(long = "prefix")]
    prefixes: Vec<String>,
    /// Overrides `warm.key_list`.
    #[arg(long)]
    key_list: Option<PathBuf>,
    /// Show a progress bar even when stderr is not a terminal (`true`/`false`).
    #[arg(long)]
    progress_bar: Option<bool>,
}

impl Common {
    fn label(&self) -> String {
        format!("{} (with flags)", self.config.display())
    }

    fn load(&self) -> Result<Config, segment_cache::config::ConfigError> {
        let mut c = Config::load_unvalidated(&self.config)?;
        if let Some(v) = &self.secret_key {
            c.auth.secret_key = v.clone().into();
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.cache_dir {
            c.cache.dir.clone_from(v);
        }
        if let Some(v) = self.capacity {
            c.cache.capacity = v;
        }
        if let Some(v) = &self.upstream_endpoint {
            c.upstream.endpoint_url = Some(v.clone());
        }
        if let Some(v) = &self.bucket {
            c.upstream.bucket.clone_from(v);
        }
        if let Some(v) = self.telemetry_listen {
            c.telemetry.listen = v;
        }
        if let Some(v) = self.concurrency {
            c.warm.concurrency = v;
        }
        c.validate(&self.label())?;
        Ok(c)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let common = match &cli.cmd {
        Cmd::Serve(c) | Cmd::CheckConfig(c) => c,
        Cmd::Warm(w) => &w.common,
        Cmd::MetricNames => {
            print!(
                "{}",
                metric_names::lines(&[segment_cache::metric_names::ALL])
            );
            return ExitCode::SUCCESS;
        }
    };
    let config = match common.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // The budget must fit the disk it is on: checked where the cache runs, not by check-config
    // (which checks a file meant for another machine).
    let capacity = match &cli.cmd {
        Cmd::CheckConfig(_) | Cmd::MetricNames => 0,
        Cmd::Serve(_) | Cmd::Warm(_) => match config.resolve_capacity(&common.label()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = match cli.cmd {
        Cmd::CheckConfig(_) => {
            println!("{}: ok", common.config.display());
            Ok(())
        }
        Cmd::Serve(_) => rt.block_on(serve(config, capacity)),
        Cmd::Warm(w) => rt.block_on(warm_once(config, capacity, &w)),
        // Printed above, before any configuration is read.
        Cmd::MetricNames => Ok(()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 2 for a configuration error found after load (a file it names), as at load.
            if e.chain().any(|cause| cause.is::<ConfigError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn open_store(config: &Config, capacity: u64) -> anyhow::Result<Arc<Store>> {
    Store::open(
        &config.cache.dir,
        &StoreOptions {
            capacity,
            access_log: config.cache.access_log,
            access_log_max: config.cache.access_log_max.0,
        },
    )
    .context("opening the cache directory")
}

fn sources(config: &Config, store: &Store) -> anyhow::Result<Sources> {
    let keys = match &config.warm.key_list {
        Some(p) => warm::read_key_list(p).map_err(|e| {
            ConfigError::invalid(
                &p.display().to_string(),
                "warm.key_list",
                format!("cannot read the key list: {e}"),
            )
        })?,
        None => Vec::new(),
    };
    let recent = if config.warm.from_access_log {
        store.access_log_keys().into_iter().map(|r| r.key).collect()
    } else {
        Vec::new()
    };
    Ok(Sources {
        prefixes: config.warm.prefixes.clone(),
        keys,
        recent,
    })
}

fn warm_options(config: &Config, capacity: u64, bar: Option<bool>) -> WarmOptions {
    WarmOptions {
        concurrency: config.warm.concurrency,
        part_size: config.warm.part_size.0,
        max_object_size: config.max_object_size(capacity),
        progress_bar: bar,
    }
}

async fn warm_once(mut config: Config, capacity: u64, args: &WarmArgs) -> anyhow::Result<()> {
    config.warm.prefixes.extend(args.prefixes.iter().cloned());
    if let Some(k) = &args.key_list {
        config.warm.key_list = Some(k.clone());
    }
    let store = open_store(&config, capacity)?;
    let client = build_client(&config.upstream).await;
    let up = Upstream::new(client, config.upstream.bucket.clone())
        .with_retry(RetryPolicy::new(config.upstream.max_attempts));
    let src = sources(&config, &store)?;
    let report = warm::warm(
        &up,
        &store,
        &src,
        &warm_options(&config, capacity, args.progress_bar),
    )
    .await
    .context("warming")?;
    let (used, cap, _, n) = store.usage();
    println!(
        "warm done: fetched {} objects ({} bytes), {} already cached, {} over capacity, {} failed; cache {n} objects, {used}/{cap} bytes",
        report.fetched_objects,
        report.fetched_bytes,
        report.already_cached,
        report.over_capacity,
        report.failed
    );
    if report.failed > 0 {
        anyhow::bail!("{} objects failed to warm", report.failed);
    }
    Ok(())
}

async fn serve(config: Config, capacity: u64) -> anyhow::Result<()> {
    // First: from here on SIGTERM cancels the token (kept until the serve loop below sees it)
    // instead of killing the process before the index is saved.
    let shutdown = shutdown_signal::install();
    let handle = telemetry::install_recorder().context("installing the metrics recorder")?;
    let store = tokio::task::spawn_blocking({
        let c = config.clone();
        move || open_store(&c, capacity)
    })
    .await??;
    let client = build_client(&config.upstream).await;
    let up = Upstream::new(client, config.upstream.bucket.clone())
        .with_retry(RetryPolicy::new(config.upstream.max_attempts));
    let mut s3 = CacheS3::new(
        store.clone(),
        up.clone(),
        config.max_object_size(capacity),
        config.cache.revalidate_after,
        MissParts::new(config.cache.miss_part_size.0, config.cache.miss_concurrency),
    );
    if config.read_ahead.enabled {
        let ra = ReadAhead::new(
            config.read_ahead.max_concurrent,
            config.read_ahead.max_bytes_per_segment.0,
        );
        s3 = s3.with_read_ahead(match config.read_ahead.fields {
            ReadAheadFields::Learned => ra.learning_fields(config.read_ahead.field_memory),
            ReadAheadFields::All => ra,
        });
    }
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(s3);
        b.set_auth(SingleKeyAuth::new(
            &config.auth.access_key,
            config.auth.secret_key.expose(),
        ));
        b.set_access(BucketAccess::new(config.upstream.bucket.clone()));
        b.build()
    };
    let ready = Arc::new(Readiness::default());
    ready
        .wait_for_warm
        .store(config.warm.ready_after_warm, Ordering::Release);

    let tel = tokio::net::TcpListener::bind(config.telemetry.listen)
        .await
        .with_context(|| format!("binding telemetry.listen {}", config.telemetry.listen))?;
    let router = telemetry::router(handle, ready.clone());
    let tel_task = tokio::spawn(shutdown_signal::serve_http1(
        "telemetry",
        tel,
        shutdown_signal::TowerToHyperService::new(router),
        shutdown.clone().cancelled_owned(),
        Duration::from_secs(10),
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding listen {}", config.listen))?;
    tracing::info!(listen = %config.listen, telemetry = %config.telemetry.listen,
        dir = %config.cache.dir.display(), capacity, configured = %config.cache.capacity,
        "segment-cache serving");
    ready.serving.store(true, Ordering::Release);

    // Background warm.
    let warm_task = if config.warm.in_serve {
        let (store, up, ready) = (store.clone(), up.clone(), ready.clone());
        let src = sources(&config, &store)?;
        let opts = warm_options(&config, capacity, Some(false));
        Some(tokio::spawn(async move {
            if let Err(e) = warm::warm(&up, &store, &src, &opts).await {
                tracing::warn!(error = %e, "background warm failed");
            }
            ready.warm_done.store(true, Ordering::Release);
        }))
    } else {
        ready.warm_done.store(true, Ordering::Release);
        metrics::gauge!(segment_cache::metric_names::WARM_DONE).set(1.0);
        None
    };

    // Save the LRU order now and then.
    let saver = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(30));
            loop {
                t.tick().await;
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || s.save_index()).await;
            }
        })
    };

    // Stops accepting on SIGTERM and lets requests in flight finish, for up to 10 s.
    shutdown_signal::serve_http1(
        "s3",
        listener,
        service,
        shutdown.cancelled_owned(),
        Duration::from_secs(10),
    )
    .await;
    tracing::info!("stopping");
    if let Some(w) = warm_task {
        w.abort();
    }
    saver.abort();
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.save_index())
        .await?
        .context("saving the index")?;
    let _ = tel_task.await;
    Ok(())
}
