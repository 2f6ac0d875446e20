//! `milvus-scaler` command line: parses configuration and wires the signal pollers, the
//! telemetry endpoint, the serving APIs (external metrics, KEDA) and node-group sizing together.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use headroom_holder::asg::AsgHolder;
use headroom_holder::k8s::{CapacityBufferHolder, PlaceholderDeployment, WorkloadScale};
use headroom_holder::round::HeadroomLoop;
use headroom_holder::{HeadroomSection, HolderConfig};
use milvus_scaler::config::{Config, ConfigError, MilvusInstance, SignalsConfig, Source};
use milvus_scaler::{table, telemetry};
use milvus_signals::SnapshotStore;
use milvus_signals::source::prometheus::PrometheusSource;
use milvus_signals::source::scrape::ScrapeSource;
use milvus_signals::source::{InstanceMeta, run_poller};
use shutdown_signal::CancellationToken;
use tokio::task::JoinSet;

/// Histogram buckets (seconds) for request, scrape and round durations: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Histogram buckets (seconds) for the scale-out phases of a new query node: 0.5 s to 20 min.
const SCALE_OUT_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
    1200.0,
];

#[derive(Parser)]
#[command(
    name = "milvus-scaler",
    version,
    about = "Milvus scaling signals for HPA, KEDA and EC2 node groups"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: `json` (default when stderr is not a terminal) or `text`.
    #[arg(long, global = true, env = "MILVUS_SCALER_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Path of a YAML configuration file; repeat to merge several files by top-level section
    /// (a section may appear in one file only).
    #[arg(long, short, env = "MILVUS_SCALER_CONFIG", required = true)]
    config: Vec<PathBuf>,
}

impl ConfigArg {
    /// Loads and merges the files.
    fn load(&self) -> Result<Config, ConfigError> {
        Config::load_all(&self.config)
    }

    /// The file names, for messages.
    fn names(&self) -> String {
        let names: Vec<String> = self
            .config
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        names.join(" + ")
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run: poll Milvus metrics and serve signals, telemetry and the configured APIs.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Overrides `telemetry.listen`.
        #[arg(long, env = "MILVUS_SCALER_TELEMETRY_LISTEN")]
        telemetry_listen: Option<std::net::SocketAddr>,
        /// Overrides `external_metrics.listen` (only when `external_metrics` is configured).
        #[arg(long, env = "MILVUS_SCALER_EXTERNAL_METRICS_LISTEN")]
        external_metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Print a table of every signal, its value, age and source health.
    Signals {
        #[command(flatten)]
        config: ConfigArg,
        /// Keep refreshing the table until interrupted.
        #[arg(long)]
        watch: bool,
        /// Refresh period with --watch.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        refresh: Duration,
    },
    /// Plan EC2 node-group capacity and the query nodes' headroom (`headroom:`) from the current
    /// signals and print them with reasons (dry-run unless --apply). Exit 1 if any group or the
    /// headroom could not be planned or changed.
    PlanNodes {
        #[command(flatten)]
        config: ConfigArg,
        /// Apply the plan once (SetDesiredCapacity / PutWarmPool, the headroom holder's write),
        /// whatever `node_groups.mode` and `headroom.mode` say.
        #[arg(long, conflicts_with = "simulate")]
        apply: bool,
        /// Replay a JSON trace of signal values through the planner in simulated time
        /// (no Milvus, no AWS) and print the plans as JSON.
        #[arg(long, value_name = "TRACE")]
        simulate: Option<PathBuf>,
    },
    /// Validate the configuration file and exit (0 valid, 2 invalid).
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the Kubernetes HPA algorithm locally: read an HPA's External metrics from the
    /// external metrics API (and CPU/memory from pod and pod-metrics lists) and drive a scale
    /// subresource (where no kube-controller-manager runs).
    LocalHpa(LocalHpaArgs),
    /// Closed-loop what-if: run HPA policies (and the smallest static size meeting the SLO)
    /// against a load trace on a service model calibrated from real Milvus; print a table or JSON.
    Simulate(SimulateCli),
    /// Print `name kind` for every metric this binary can export (its libraries' included), one a
    /// line: what the Grafana contract test reads instead of a hand copy.
    #[command(hide = true)]
    MetricNames,
}

#[derive(clap::Args)]
struct SimulateCli {
    /// Service model (YAML): per-node capacity, latency, time to serve, provisioning; see
    /// bench/models/.
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Load trace (YAML): points, spike or diurnal; see bench/traces/.
    #[arg(long, value_name = "FILE")]
    trace: PathBuf,
    /// An autoscaling/v2 HPA to run (repeat to compare several side by side).
    #[arg(long, value_name = "FILE")]
    hpa: Vec<PathBuf>,
    /// A node-headroom planner configuration (YAML, docs/headroom.md; see bench/policies/headroom-*.yaml):
    /// every HPA also runs with it, its placeholder pods holding machine room (repeat to compare).
    #[arg(long, value_name = "FILE")]
    headroom: Vec<PathBuf>,
    /// Also run every HPA with N spare machines kept by raising the provisioner's desired capacity
    /// (the node-group planner's ASG headroom): a Cluster-Autoscaler-like provisioner removes
    /// them when they stay empty, and they are asked for again (counted as churn).
    #[arg(long, value_name = "N")]
    spare_machines: Option<u32>,
    /// Query-node replicas at the start of the trace.
    #[arg(long, default_value_t = 2)]
    initial_replicas: u32,
    /// The HPA's sync period (--horizontal-pod-autoscaler-sync-period).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    sync_period: Duration,
    /// Usage-ratio tolerance (--horizontal-pod-autoscaler-tolerance).
    #[arg(long, default_value_t = 0.1)]
    tolerance: f64,
    /// Also run the smallest static size meeting the SLO, searched up to this many replicas
    /// (0: skip).
    #[arg(long, default_value_t = 64)]
    static_up_to: u32,
    /// `table` (summary) or `json` (summary and time series).
    #[arg(long, default_value = "table")]
    output: SimulateOutput,
    /// Seconds between two samples of the JSON time series.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    sample_every: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum SimulateOutput {
    Table,
    Json,
}

#[derive(clap::Args)]
struct LocalHpaArgs {
    /// An autoscaling/v2 HorizontalPodAutoscaler (YAML), read as-is; External, Resource and
    /// ContainerResource metrics.
    #[arg(long, value_name = "FILE")]
    hpa: PathBuf,
    /// Base URL of the external metrics API, e.g. https://127.0.0.1:6443 (External metrics).
    #[arg(long, value_name = "URL")]
    metrics_api: Option<String>,
    /// URL of the scale subresource: GET and PUT an autoscaling/v1 Scale.
    #[arg(long, value_name = "URL")]
    scale_url: String,
    /// URL of a core/v1 PodList of the target's pods, asked with the scale's status.selector as
    /// labelSelector (Resource metrics), e.g. .../api/v1/namespaces/milvus/pods.
    #[arg(long, value_name = "URL")]
    pods_url: Option<String>,
    /// URL of a metrics.k8s.io/v1beta1 PodMetricsList, asked with the same labelSelector
    /// (Resource metrics), e.g. .../apis/metrics.k8s.io/v1beta1/namespaces/milvus/pods.
    #[arg(long, value_name = "URL")]
    pod_metrics_url: Option<String>,
    /// PEM CA bundle to trust for HTTPS.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// PEM client certificate for the metrics API.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Accept any server certificate (the metrics API's dev self-signed mode).
    #[arg(long)]
    insecure_skip_tls_verify: bool,
    /// Time between syncs (--horizontal-pod-autoscaler-sync-period).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    sync_period: Duration,
    /// Usage-ratio tolerance (--horizontal-pod-autoscaler-tolerance).
    #[arg(long, default_value_t = 0.1)]
    tolerance: f64,
    /// CPU metrics: for this long after a pod starts, its sample is left out while it is unready
    /// or taken less than one metrics window after it became ready
    /// (--horizontal-pod-autoscaler-cpu-initialization-period).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    cpu_initialization_period: Duration,
    /// CPU metrics: after the initialization period, an unready pod is left out if its readiness
    /// last changed within this long of its start, i.e. it has never been ready
    /// (--horizontal-pod-autoscaler-initial-readiness-delay).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    initial_readiness_delay: Duration,
    /// Sync once and exit (1 if the scale could not be read or updated).
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Both rustls providers end up compiled in (aws-lc-rs for the external metrics API, ring via
    // tonic and reqwest), so rustls cannot pick one by itself: choose aws-lc-rs for the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

/// 2 when what the user wrote is wrong (a configuration file, or the HPA, model or trace file a
/// command reads, a TLS file it names, or the external metrics API's cluster access), wherever in the chain of
/// contexts that error is; 1 for everything else (a port taken, a source down, an API call
/// failing).
fn exit_code(e: &anyhow::Error) -> ExitCode {
    let bad_input = e.chain().any(|cause| {
        cause.is::<ConfigError>()
                || cause.is::<loop_sim::cli::SimulateError>()
                // The deployment, not an outage: a TLS file, no token mounted, RBAC, no CA in
                // the cluster.
                || cause
                    .downcast_ref::<metrics_api::ServerError>()
                    .is_some_and(metrics_api::ServerError::is_config)
                || cause
                    .downcast_ref::<keda_scaler::KedaError>()
                    .is_some_and(keda_scaler::KedaError::is_config)
                || matches!(
                    cause.downcast_ref::<headroom_holder::k8s::ClientError>(),
                    Some(headroom_holder::k8s::ClientError::NotInCluster { .. })
                )
    });
    if bad_input {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

fn init_logging(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::LocalHpa(args) => local_hpa(args).await,
        Command::Simulate(args) => simulate(args),
        Command::MetricNames => {
            print!(
                "{}",
                metric_names::lines(milvus_scaler::metric_names::EVERY_LIST)
            );
            Ok(())
        }
        Command::CheckConfig { config } => {
            let cfg = config.load()?;
            println!(
                "{}: valid, {} Milvus instance(s), {} node group(s), headroom: {}",
                config.names(),
                cfg.milvus.len(),
                cfg.node_groups.as_ref().map_or(0, |n| n.groups().len()),
                cfg.headroom.as_ref().map_or("off", |h| h.holder.key())
            );
            Ok(())
        }
        Command::Signals {
            config,
            watch,
            refresh,
        } => {
            let cfg = config.load()?;
            signals(cfg, watch, refresh).await
        }
        Command::PlanNodes {
            config,
            apply,
            simulate,
        } => {
            let cfg = config.load()?;
            plan_nodes(cfg, config.names(), apply, simulate).await
        }
        Command::Serve {
            config,
            telemetry_listen,
            external_metrics_listen,
        } => {
            let mut cfg = config.load()?;
            if let Some(listen) = telemetry_listen {
                cfg.telemetry.listen = listen;
            }
            if let (Some(listen), Some(em)) = (external_metrics_listen, &mut cfg.external_metrics) {
                em.listen = listen;
            }
            serve(cfg, config.names()).await
        }
    }
}

fn simulate(args: SimulateCli) -> anyhow::Result<()> {
    let options = hpa::Options {
        tolerance: args.tolerance,
        ..hpa::Options::default()
    };
    let (model, runs) = loop_sim::cli::simulate(&loop_sim::cli::SimulateArgs {
        model: args.model,
        trace: args.trace,
        hpas: args.hpa,
        headrooms: args.headroom,
        spare_machines: args.spare_machines,
        initial_replicas: args.initial_replicas,
        sync_period_seconds: args.sync_period.as_secs_f64(),
        options,
        static_up_to: args.static_up_to,
        sample_every_seconds: args.sample_every.as_secs_f64().max(1.0),
    })?;
    match args.output {
        SimulateOutput::Table => print!("{}", loop_sim::cli::render_table(&model, &runs)),
        SimulateOutput::Json => println!("{}", serde_json::to_string(&runs)?),
    }
    Ok(())
}

async fn local_hpa(args: LocalHpaArgs) -> anyhow::Result<()> {
    // The HPA file is local-hpa's configuration: its errors are configuration errors (exit 2).
    let file = args.hpa.display().to_string();
    let text = std::fs::read_to_string(&args.hpa).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let hpa = hpa::HpaSpec::from_yaml(&text)
        .map_err(|e| ConfigError::invalid(&file, e.path, e.message))?;
    let mut controller = hpa_controller::LocalHpa::new(hpa_controller::ControllerConfig {
        hpa,
        metrics_api: args.metrics_api,
        scale_url: args.scale_url,
        pods_url: args.pods_url,
        pod_metrics_url: args.pod_metrics_url,
        sync_period: args.sync_period,
        tolerance: args.tolerance,
        pod_timing: hpa::PodTiming {
            cpu_initialization_period: args.cpu_initialization_period,
            initial_readiness_delay: args.initial_readiness_delay,
        },
        request_timeout: Some(args.sync_period.max(Duration::from_secs(1))),
        tls: hpa_controller::TlsOptions {
            ca_file: args.ca_file,
            client_cert: args.client_cert,
            client_key: args.client_key,
            insecure_skip_tls_verify: args.insecure_skip_tls_verify,
        },
    })?;
    if args.once {
        controller.sync_once().await?;
        return Ok(());
    }
    controller
        .run(shutdown_signal::install().cancelled_owned())
        .await;
    tracing::info!("local-hpa stopped");
    Ok(())
}

/// Starts one poller per instance; they stop when `shutdown` is cancelled.
fn start_pollers(
    cfg: &Config,
    store: &Arc<SnapshotStore>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    for instance in &cfg.milvus {
        let meta = InstanceMeta {
            name: instance.name.clone(),
            namespace: instance.namespace.clone(),
            stale_after: cfg.signals.stale_after,
        };
        spawn_poller(
            instance,
            meta,
            &cfg.signals,
            store.clone(),
            shutdown.clone(),
            tasks,
        )
        .with_context(|| format!("starting the poller of Milvus instance {:?}", instance.name))?;
    }
    Ok(())
}

fn spawn_poller(
    instance: &MilvusInstance,
    meta: InstanceMeta,
    signals: &SignalsConfig,
    store: Arc<SnapshotStore>,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let (interval, timeout) = (instance.source.interval(), instance.source.timeout());
    match &instance.source {
        Source::Scrape(s) => {
            let source = ScrapeSource::new(s.targets.clone(), timeout, signals.window)?
                .with_demand_drain(signals.demand_drain);
            tasks.spawn(run_poller(source, meta, interval, store, shutdown));
        }
        Source::Prometheus(p) => {
            let source = PrometheusSource::new(&p.url, &p.selector, timeout, signals.window)?
                .with_demand_drain(signals.demand_drain);
            tasks.spawn(run_poller(source, meta, interval, store, shutdown));
        }
    }
    Ok(())
}

async fn serve(cfg: Config, config_names: String) -> anyhow::Result<()> {
    // First: from here on SIGTERM cancels the token instead of killing the process, and a
    // SIGTERM during start-up is kept until the wait below.
    let shutdown = shutdown_signal::install();
    let forget = cfg.telemetry.forget_idle_series_after;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        // Real histograms (not summaries), so Prometheus can aggregate and take quantiles.
        .set_buckets(LATENCY_BUCKETS)
        .context("configuring histogram buckets")?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                milvus_signals::metric_names::SCALE_OUT_PHASE_SECONDS.to_string(),
            ),
            SCALE_OUT_BUCKETS,
        )
        .context("configuring the scale-out histogram buckets")?
        // Only histograms: a per-target histogram is ~15 series, and pod IPs churn. Gauges are
        // kept (some are moved by increments, which idle removal would reset).
        .idle_timeout(
            metrics_util::MetricKindMask::HISTOGRAM,
            (!forget.is_zero()).then_some(forget),
        )
        .install_recorder()
        .context("installing the metrics recorder")?;
    // `# HELP` text for /metrics (the exporter prints it once a series exists).
    for list in milvus_scaler::metric_names::EVERY_LIST {
        metric_names::describe(list);
    }
    let store = Arc::new(SnapshotStore::default());
    // Every part of the server stops with the process's token: nothing stops alone.
    let mut tasks = JoinSet::new();
    start_pollers(&cfg, &store, &shutdown, &mut tasks)?;

    let upkeep = handle.clone();
    let upkeep_stop = shutdown.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = upkeep_stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => upkeep.run_upkeep(),
            }
        }
    });

    let headroom_drives_node_groups = cfg
        .headroom
        .as_ref()
        .is_some_and(|h| matches!(h.holder, HolderConfig::Asg(_)));
    if let Some(h) = &cfg.headroom {
        let apply = h.mode == node_groups::Mode::Apply;
        tracing::info!(holder = h.holder.key(), mode = ?h.mode, interval = ?h.interval, "node headroom on");
        let token = shutdown.clone();
        let election = leader_lease::lease::resolve(
            &h.leader_election,
            headroom_holder::config::DEFAULT_LEASE_NAME,
            apply,
            &leader_lease::lease::PodEnv::from_process(),
        )
        .map_err(|e| {
            ConfigError::invalid(&config_names, format!("headroom.{}", e.path), e.message)
        })?;
        let lp = headroom_loop(&cfg, h, store.clone()).await?;
        let leadership = elect(
            election,
            headroom_holder::ELECTION,
            apply,
            "headroom leader election off: this replica writes the headroom whatever other replicas do (headroom.leader_election, docs/headroom.md)",
            &mut tasks,
            &token,
        )
        .await?;
        match lp {
            AnyHeadroomLoop::Placeholder(lp) => {
                tasks.spawn(led(lp, leadership).run(h.interval, apply, token));
            }
            AnyHeadroomLoop::CapacityBuffer(lp) => {
                tasks.spawn(led(lp, leadership).run(h.interval, apply, token));
            }
            AnyHeadroomLoop::Asg(lp) => {
                tasks.spawn(led(lp, leadership).run(h.interval, apply, token));
            }
        }
    }

    if let Some(ng) = cfg
        .node_groups
        .as_ref()
        .filter(|_| !headroom_drives_node_groups)
    {
        let apply = ng.config().mode == node_groups::Mode::Apply;
        let election = leader_lease::lease::resolve(
            &ng.config().leader_election,
            node_groups::DEFAULT_LEASE_NAME,
            apply,
            &leader_lease::lease::PodEnv::from_process(),
        )
        .map_err(|e| {
            ConfigError::invalid(&config_names, format!("node_groups.{}", e.path), e.message)
        })?;
        let mut runner = node_groups_runner(ng).await;
        let interval = ng.config().interval;
        tracing::info!(groups = ng.groups().len(), mode = ?ng.config().mode, ?interval, "node-group sizing on");
        // Its own Lease (node_groups::DEFAULT_LEASE_NAME), not the headroom's: see there.
        if let Some(l) = elect(
            election,
            node_groups::ELECTION,
            apply,
            "node groups leader election off: this replica writes Auto Scaling desired capacity whatever other replicas do (node_groups.leader_election, docs/node-groups.md)",
            &mut tasks,
            &shutdown,
        )
        .await?
        {
            runner = runner.with_leadership(l);
        }
        tasks.spawn(node_groups::applier::run_loop(
            runner,
            store.clone(),
            interval,
            shutdown.clone(),
        ));
    }

    let listener = tokio::net::TcpListener::bind(cfg.telemetry.listen)
        .await
        .with_context(|| format!("binding telemetry.listen {}", cfg.telemetry.listen))?;
    tracing::info!(listen = %cfg.telemetry.listen, instances = cfg.milvus.len(), "milvus-scaler serving");
    let app = telemetry::router(telemetry::TelemetryState {
        metrics: handle,
        store: store.clone(),
    });
    if let Some(em) = &cfg.external_metrics {
        let api = metrics_api::MetricsApiServer::bind(em, store.clone())
            .await
            .context("starting the external metrics API")?;
        tracing::info!(listen = %em.listen, "external metrics API serving (external.metrics.k8s.io/v1beta1)");
        tasks.spawn(api.run(shutdown.clone()));
    }
    let keda = match &cfg.keda {
        Some(keda_cfg) => {
            let names = cfg.milvus.iter().map(|m| m.name.clone()).collect();
            let running = keda_scaler::start(keda_cfg, store.clone(), names, shutdown.clone())
                .await
                .context("starting the KEDA external scaler")?;
            Some(running.task)
        }
        None => None,
    };
    let server = tokio::spawn(shutdown_signal::serve_http1(
        "telemetry",
        listener,
        shutdown_signal::TowerToHyperService::new(app),
        shutdown.clone().cancelled_owned(),
        Duration::from_secs(5),
    ));

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if let Some(keda) = keda {
        match tokio::time::timeout(Duration::from_secs(5), keda).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "KEDA external scaler failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "KEDA external scaler task failed"),
            Ok(Ok(Ok(()))) | Err(_) => {}
        }
    }
    match tokio::time::timeout(Duration::from_secs(6), server).await {
        Ok(Err(e)) => Err(e).context("telemetry server task failed"),
        Ok(Ok(())) | Err(_) => Ok(()),
    }
}

async fn signals(cfg: Config, watch_mode: bool, refresh: Duration) -> anyhow::Result<()> {
    let shutdown = shutdown_signal::install();
    let store = Arc::new(SnapshotStore::default());
    // The pollers stop on a signal, or alone once the table is printed.
    let stop = shutdown.child_token();
    let mut tasks = JoinSet::new();
    start_pollers(&cfg, &store, &stop, &mut tasks)?;
    wait_for_rounds(&cfg, &store).await;
    let terminal = std::io::stdout().is_terminal();
    loop {
        let text = table::render(&store.load(), SystemTime::now());
        if watch_mode && terminal {
            print!("\x1b[2J\x1b[H");
        }
        println!("{text}");
        if !watch_mode {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            () = shutdown.cancelled() => break,
        }
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Waits until every instance has had a few rounds (so rates have something to work with),
/// giving up after a while.
async fn wait_for_rounds(cfg: &Config, store: &SnapshotStore) {
    let longest_interval = cfg.longest_interval();
    let mut rounds = store.subscribe();
    let wanted = (cfg.milvus.len() as u64) * 3;
    let _ = tokio::time::timeout(
        longest_interval * 3 + Duration::from_secs(5),
        rounds.wait_for(|n| *n >= wanted),
    )
    .await;
}

/// The planning loop of the node groups, validated at load, on the real Auto Scaling API.
async fn node_groups_runner(
    ng: &node_groups::NodeGroups,
) -> node_groups::applier::Runner<node_groups::applier::SdkAutoScaling> {
    let client = node_groups::applier::SdkAutoScaling::new(ng.config()).await;
    node_groups::applier::Runner::new(ng, client)
}

async fn plan_nodes(
    cfg: Config,
    config_names: String,
    apply: bool,
    simulate: Option<PathBuf>,
) -> anyhow::Result<()> {
    if cfg.node_groups.is_none() && cfg.headroom.is_none() {
        return Err(ConfigError::invalid(
            &config_names,
            "node_groups",
            "plan-nodes needs a node_groups section (docs/node-groups.md) or a headroom section (docs/headroom.md)",
        )
        .into());
    }
    if let Some(path) = simulate {
        let Some(ng) = cfg.node_groups.clone() else {
            return Err(ConfigError::invalid(
                &config_names,
                "node_groups",
                "plan-nodes --simulate replays node groups: it needs a node_groups section (docs/node-groups.md)",
            )
            .into());
        };
        // The trace is this command's input file: a bad one is a configuration error (exit 2).
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let trace: node_groups::simulate::Trace =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
                .map_err(|e| {
                    let path = e.path().to_string();
                    ConfigError::invalid(&file, path, e.into_inner().to_string())
                })?;
        let out = node_groups::simulate::run(ng.groups(), &trace)
            .map_err(|e| ConfigError::invalid(&file, "(trace)", e))?;
        println!("{out}");
        return Ok(());
    }
    let store = Arc::new(SnapshotStore::default());
    // Built before the pollers start: a configuration the cluster cannot serve (no
    // ServiceAccount) fails before any waiting.
    let headroom = match &cfg.headroom {
        Some(h) => Some(headroom_loop(&cfg, h, store.clone()).await?),
        None => None,
    };
    let standalone_groups = match (&cfg.node_groups, &headroom) {
        (_, Some(AnyHeadroomLoop::Asg(_))) | (None, _) => None,
        (Some(ng), _) => Some(node_groups_runner(ng).await),
    };
    // Not the process's token: a one-shot command leaves SIGTERM its default action (exit).
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    start_pollers(&cfg, &store, &stop, &mut tasks)?;
    wait_for_rounds(&cfg, &store).await;
    let now = SystemTime::now();
    let mut outcomes = Vec::new();
    if let Some(mut runner) = standalone_groups {
        outcomes = runner.round(&store.load(), now, apply).await;
    }
    let headroom_round = match headroom {
        Some(AnyHeadroomLoop::Placeholder(mut lp)) => Some(lp.round(now, apply).await),
        Some(AnyHeadroomLoop::CapacityBuffer(mut lp)) => Some(lp.round(now, apply).await),
        Some(AnyHeadroomLoop::Asg(mut lp)) => {
            let round = lp.round(now, apply).await;
            outcomes = lp.holder().last_outcomes().to_vec();
            Some(round)
        }
        None => None,
    };
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    println!(
        "mode: {}\n",
        if apply {
            "apply (--apply)"
        } else {
            "dry-run (add --apply to change the groups and the headroom)"
        }
    );
    if !outcomes.is_empty() {
        print!("{}", node_groups::applier::render(&outcomes));
    }
    if let Some(round) = &headroom_round {
        if !outcomes.is_empty() {
            println!();
        }
        println!("headroom:");
        print!("{}", headroom_holder::round::render(round));
    }
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o.action, node_groups::applier::Action::Failed(_)))
        .count();
    if failed > 0 {
        anyhow::bail!("{failed} node group(s) could not be planned or changed (see above)");
    }
    if headroom_round.as_ref().is_some_and(|r| r.failed()) {
        anyhow::bail!("the headroom could not be read or held (see above)");
    }
    Ok(())
}

/// Starts the election `settings` (if on) for `purpose` on the cluster's client: its elector runs
/// in `tasks` until `token` is cancelled and then releases the Lease. The view the loop asks
/// before each write, or `None` (logged as `off` when `apply`: every replica writes then).
async fn elect(
    settings: Option<leader_lease::lease::LeaseSettings>,
    purpose: leader_lease::Purpose,
    apply: bool,
    off: &'static str,
    tasks: &mut JoinSet<()>,
    token: &shutdown_signal::CancellationToken,
) -> anyhow::Result<Option<leader_lease::Leadership>> {
    let Some(settings) = settings else {
        if apply {
            tracing::info!("{off}");
        }
        return Ok(None);
    };
    let client = headroom_holder::k8s::cluster_client().await?;
    let elector = leader_lease::Elector::new(
        client,
        settings,
        Arc::new(leader_lease::lease::TokioClock),
        purpose,
    );
    let leadership = elector.leadership();
    // Releases the lease when the token is cancelled, after the loop stops writing.
    tasks.spawn(elector.run(token.clone()));
    Ok(Some(leadership))
}

/// `lp`, writing only while `leadership` (if any) says this replica leads.
fn led<H, W>(
    lp: HeadroomLoop<H, W>,
    leadership: Option<leader_lease::Leadership>,
) -> HeadroomLoop<H, W>
where
    H: headroom_holder::HeadroomHolder,
    W: headroom_holder::WorkloadPods,
{
    match leadership {
        Some(l) => lp.with_leadership(l),
        None => lp,
    }
}

/// The headroom loop of the configured holder (one type per holder).
enum AnyHeadroomLoop {
    Placeholder(HeadroomLoop<PlaceholderDeployment, WorkloadScale>),
    CapacityBuffer(HeadroomLoop<CapacityBufferHolder, WorkloadScale>),
    Asg(HeadroomLoop<AsgHolder<node_groups::applier::SdkAutoScaling>, WorkloadScale>),
}

/// The planner, the configured holder and the workload read of `h`, on the pod's (or the
/// kubeconfig's) Kubernetes client (and, for the `asg` holder, the node groups' Auto Scaling client).
async fn headroom_loop(
    cfg: &Config,
    h: &HeadroomSection,
    store: Arc<SnapshotStore>,
) -> anyhow::Result<AnyHeadroomLoop> {
    let client = headroom_holder::k8s::cluster_client().await?;
    let planner = headroom::Planner::new(h.planner.clone());
    let workload = WorkloadScale::new(client.clone(), &h.workload);
    Ok(match &h.holder {
        HolderConfig::Placeholder(d) => AnyHeadroomLoop::Placeholder(HeadroomLoop::new(
            planner,
            PlaceholderDeployment::new(client, d),
            workload,
            store,
            &h.milvus,
        )),
        HolderConfig::CapacityBuffer(b) => AnyHeadroomLoop::CapacityBuffer(HeadroomLoop::new(
            planner,
            CapacityBufferHolder::new(client, b),
            workload,
            store,
            &h.milvus,
        )),
        HolderConfig::Asg(a) => {
            // Validated at load: the asg holder comes with a node_groups section.
            let ng = cfg
                .node_groups
                .as_ref()
                .context("headroom.holder.asg needs a node_groups section")?;
            let runner = node_groups_runner(ng).await;
            AnyHeadroomLoop::Asg(HeadroomLoop::new(
                planner,
                AsgHolder::new(runner, a, store.clone()),
                workload,
                store,
                &h.milvus,
            ))
        }
    })
}
