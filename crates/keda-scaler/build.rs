//! Generates the KEDA external scaler server and client from `proto/externalscaler.proto`.
//! Uses `$PROTOC` when set, otherwise the `protoc` shipped by `protoc-bin-vendored`, so the build
//! needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_dir.join("externalscaler.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The generated `connect()` helper needs tonic's client transport; the server does not.
        .build_transport(false)
        .file_descriptor_set_path(out_dir.join("externalscaler_descriptor.bin"))
        .compile_with_config(config, &[proto], &[proto_dir])?;
    Ok(())
}
