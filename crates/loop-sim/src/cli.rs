//! `milvus-scaler simulate`: files in, a report out. Kept here so the binary only parses flags.

use std::path::{Path, PathBuf};

use crate::SimError;
use crate::headroom_source::{HeadroomSource, PlannedHeadroom, SpareMachines};
use crate::hpa_controller::HpaController;
use crate::model::SimConfig;
use crate::report::{NamedRun, static_peak, table};
use crate::sim::run_with_headroom;
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
    /// Node-headroom planner configurations (YAML, [`headroom::HeadroomConfig`]): every HPA also
    /// runs once with each, its placeholder pods holding room on machines.
    pub headrooms: Vec<PathBuf>,
    /// Also run every HPA with this many spare machines asked of the provisioner directly (EC2
    /// Auto Scaling desired capacity, the node-group planner's headroom): the provisioner removes
    /// them when they stay empty and they are asked for again.
    pub spare_machines: Option<u32>,
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

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Runs every HPA (and the static baseline) on the trace, each also with every headroom planner.
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
    let mut headrooms = Vec::new();
    for path in &args.headrooms {
        let headroom: headroom::HeadroomConfig = yaml_config::read(path)?;
        headrooms.push((file_name(path), headroom));
    }
    for path in &args.hpas {
        let spec = hpa::HpaSpec::from_yaml(&read(path)?).map_err(|source| SimulateError::Hpa {
            path: path.clone(),
            source,
        })?;
        // Without headroom first (the provisioner alone), then with each headroom planner, then
        // with the spare machines.
        let mut variants: Vec<(String, Option<Box<dyn HeadroomSource>>)> =
            vec![(file_name(path), None)];
        for (headroom_name, headroom) in &headrooms {
            let planned = PlannedHeadroom::new(headroom.clone(), args.sync_period_seconds);
            variants.push((
                format!("{} + {headroom_name}", file_name(path)),
                Some(Box::new(planned)),
            ));
        }
        if let Some(n) = args.spare_machines {
            variants.push((
                format!("{} + {n} spare machines", file_name(path)),
                Some(Box::new(SpareMachines(n))),
            ));
        }
        for (name, mut headroom) in variants {
            let mut controller =
                HpaController::new(spec.clone(), args.options, args.sync_period_seconds)?;
            let outcome = run_with_headroom(
                &config,
                &trace,
                &mut controller,
                headroom
                    .as_mut()
                    .map(|h| h.as_mut() as &mut dyn HeadroomSource),
                args.initial_replicas,
                args.sample_every_seconds,
            )?;
            runs.push(NamedRun { name, outcome });
        }
    }
    Ok((config, runs))
}

/// The report as a table.
pub fn render_table(config: &SimConfig, runs: &[NamedRun]) -> String {
    table(runs, config.slo_p99_seconds)
}
