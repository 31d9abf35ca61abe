//! `grpc-greeter [ADDR]`: serve the greeter on ADDR (default 127.0.0.1:50051) until Ctrl-C.
//! `grpc-greeter --write-descriptor FILE`: write the descriptor set the plugin reads.

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, file] if flag == "--write-descriptor" => {
            std::fs::write(file, grpc_greeter::DESCRIPTOR_SET).map_err(|e| format!("{file}: {e}"))
        }
        [] => run("127.0.0.1:50051").await,
        [addr] if !addr.starts_with('-') => run(addr).await,
        _ => Err("usage: grpc-greeter [ADDR] | grpc-greeter --write-descriptor FILE".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grpc-greeter: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(addr: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    eprintln!("grpc-greeter: serving helloworld.Greeter on {addr} (h2c)");
    let ctrl_c = async {
        // If the signal handler cannot be installed, serve until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    grpc_greeter::serve(listener, ctrl_c)
        .await
        .map_err(|e| e.to_string())
}
