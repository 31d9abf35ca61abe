//! Compiles proto/greeter.proto with protox (pure Rust, no `protoc`): the tonic server and
//! client code, and the descriptor set (`greeter.pb`) the grpc-transcode plugin reads.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["greeter.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("greeter.pb"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
