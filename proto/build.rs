//! Compiles the `.proto` sources with protox (pure Rust, no system `protoc`) and generates the
//! tonic/prost code. The encoded descriptor set is kept for server reflection.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "eigenlayer/hourglass/v1/common/auth.proto",
    "eigenlayer/hourglass/v1/executor/executor.proto",
    "eigenlayer/hourglass/v1/performer/performer.proto",
    "avsnode/v1/stream.proto",
    "avsnode/v1/signer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    fs::write(
        out_dir.join("avsnode_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
