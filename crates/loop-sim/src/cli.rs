//! `milvus-scaler simulate`: files in, a report out. Kept here so the binary only parses flags.

use std::path::{Path, PathBuf};

use crate::SimError;
use crate::hpa_controller::HpaController;
use crate::model::SimConfig;
use crate::report::{NamedRun, static_peak, table};
use crate::sim::run;
use crate::trace::LoadTrace;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateArgs {
    /// The service model (YAML, [`SimConfig`]).
    pub model: PathBuf,
    /// The load trace (YAML, [`LoadTrace`]).
    pub trace: PathBuf,
    /// One or more `autoscaling/v2` HPA files, each run on the trace.
    pub hpas: Vec<PathBuf>,
    /// Replicas at the start of the trace.
    pub initial_replicas: u32,
    /// The HPA's sync period, seconds.
    pub sync_period_seconds: f64,
    /// The HPA controller's options (tolerance, default downscale stabilisation, CPU timing).
    pub options: hpa::Options,
    /// Also run the smallest static size that meets the SLO, up to this many replicas (0: no).
    pub static_up_to: u32,
    /// Seconds between two samples of the time series in JSON output.
    pub sample_every_seconds: f64,
}

/// Errors of `simulate`, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A model or trace file is not what it should be (the key path names where).
    #[error(transparent)]
    Parse(#[from] yaml_config::ConfigError),
    /// An HPA file is not a valid HPA.
    #[error("{path}: {source}")]
    Hpa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: hpa::SpecError,
    },
    /// The simulation refused its inputs.
    #[error("{0}")]
    Sim(#[from] SimError),
}

fn read(path: &Path) -> Result<String, SimulateError> {
    std::fs::read_to_string(path).map_err(|source| SimulateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs every HPA (and the static baseline) on the trace.
pub fn simulate(args: &SimulateArgs) -> Result<(SimConfig, Vec<NamedRun>), SimulateError> {
    let invalid = |path: &Path, e: SimError| match e {
        SimError::Invalid { key, message } => {
            yaml_config::ConfigError::invalid(&path.display().to_string(), key, message)
        }
        other => {
            yaml_config::ConfigError::invalid(&path.display().to_string(), "", other.to_string())
        }
    };
    let config: SimConfig = yaml_config::read(&args.model)?;
    config.validate().map_err(|e| invalid(&args.model, e))?;
    let trace: LoadTrace = yaml_config::read(&args.trace)?;
    trace.validate().map_err(|e| invalid(&args.trace, e))?;
    let mut runs = Vec::new();
    if args.static_up_to > 0 {
        let (n, outcome) = static_peak(
            &config,
            &trace,
            args.static_up_to,
            args.sample_every_seconds,
        )?;
        runs.push(NamedRun {
            name: format!("static {n} (smallest meeting the SLO)"),
            outcome,
        });
    }
    for path in &args.hpas {
        let spec = hpa::HpaSpec::from_yaml(&read(path)?).map_err(|source| SimulateError::Hpa {
            path: path.clone(),
            source,
        })?;
        let mut controller = HpaController::new(spec, args.options, args.sync_period_seconds)?;
        let outcome = run(
            &config,
            &trace,
            &mut controller,
            args.initial_replicas,
            args.sample_every_seconds,
        )?;
        runs.push(NamedRun {
            name: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            outcome,
        });
    }
    Ok((config, runs))
}

/// The report as a table.
pub fn render_table(config: &SimConfig, runs: &[NamedRun]) -> String {
    table(runs, config.slo_p99_seconds)
}
