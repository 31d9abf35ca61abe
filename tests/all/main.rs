//! gatehouse integration tests: one binary, real sockets on 127.0.0.1, real origins.

mod support;

mod admin;
mod cli;
mod config_errors;
mod connections;
mod discovery;
mod first_hour;
mod grpc;
mod plugins;
mod productdetails;
mod proxy;
mod reload;
mod shipped_plugins;
mod shutdown;
mod streaming;
