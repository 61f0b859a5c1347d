//! Compiles the protos with protox (pure Rust, no system protoc) and keeps the descriptor set for reflection.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = [
        "sluice/discovery/v1/discovery.proto",
        "sluice/config/v1/config.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("sluice_descriptor.bin"), fds.encode_to_vec())?;

    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    // BTreeMap makes map encoding deterministic, so a resource's version is a pure content hash.
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Small per-stream buffers: a control plane holds one stream per data-plane pod.
        .codec_path("crate::codec::CompactCodec")
        .compile_fds_with_config(fds, config)?;
    for dir in ["sluice", "google"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    Ok(())
}
