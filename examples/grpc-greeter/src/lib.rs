//! The greeter: a tonic gRPC server with one unary method (`helloworld.Greeter/SayHello`),
//! used by the grpc-transcode example and the end-to-end tests. It fails on purpose for some
//! names so every error mapping can be seen.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

pub use {prost, tonic};

/// The generated messages, server and client.
pub mod pb {
    tonic::include_proto!("helloworld");
}

/// The descriptor set of `proto/greeter.proto` (with imports), as `greeter.pb` holds it.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/greeter.pb"));

use pb::greeter_server::{Greeter, GreeterServer};
use pb::{HelloReply, HelloRequest};

/// The service implementation.
#[derive(Debug, Default)]
pub struct GreeterService;

#[tonic::async_trait]
impl Greeter for GreeterService {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let HelloRequest { name, times, shout } = request.into_inner();
        match name.as_str() {
            "" => return Err(Status::invalid_argument("name must not be empty")),
            // Not ASCII on purpose: tonic percent-encodes `grpc-message`.
            "nobody" => return Err(Status::not_found("no one called “nobody” here")),
            "mallory" => return Err(Status::permission_denied("mallory may not be greeted")),
            _ => {}
        }
        if !(0..=10).contains(&times) {
            return Err(Status::invalid_argument("times must be from 0 to 10"));
        }
        let one = format!("Hello, {name}!");
        let mut message = vec![one; times.max(1) as usize].join(" ");
        if shout {
            message = message.to_uppercase();
        }
        Ok(Response::new(HelloReply {
            length: message.chars().count() as i64,
            message,
        }))
    }
}

/// Serve the greeter over h2c on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(GreeterServer::new(GreeterService))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}
