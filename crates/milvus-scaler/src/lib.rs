//! `milvus-scaler`: configuration, the signals table and the telemetry endpoint. The binary
//! (`main.rs`) parses the command line and wires these parts to the signal pollers.

pub mod config;
pub mod metric_names;
pub mod table;
pub mod telemetry;
