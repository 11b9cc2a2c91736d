// Compiles every proto/*.proto with protox (pure Rust), so no `protoc` is needed on the machine.
// Also writes the encoded FileDescriptorSet to OUT_DIR so servers can offer gRPC reflection
// and tests can inspect the schema (`proto::FILE_DESCRIPTOR_SET`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    // Every .proto in proto/ (control API, heartbeat packets, ...), in a stable order.
    let mut files: Vec<String> = std::fs::read_dir("proto")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".proto"))
        .collect();
    files.sort();
    for file in &files {
        compiler.open_file(file)?;
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("control_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No generated `ControlClient::connect(dst)` constructor: it would clash with the
        // `Connect` RPC method. Clients build a `Channel` and call `ControlClient::new`.
        .build_transport(false)
        .compile_fds(compiler.file_descriptor_set())?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
