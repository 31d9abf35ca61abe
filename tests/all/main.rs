//! gatehouse integration tests: one binary, real sockets on 127.0.0.1, real origins.

mod support;

mod admin;
mod audit;
mod cache;
mod call_tracing;
mod cli;
mod compression;
mod config_errors;
mod connections;
mod cors;
mod cors_browser;
mod dashboard;
mod dashboard_browser;
mod discovery;
mod edge_endpoint_cap;
mod edge_h2;
mod edge_path;
mod edge_requests;
mod edge_trust;
mod etcd_server;
mod first_hour;
mod gray;
mod grpc;
mod layering;
mod metrics;
mod mirror;
mod plugin_kit;
mod plugins;
mod productdetails;
mod proxy;
mod rate_limits;
mod redis_cache;
mod redis_limits;
mod registry_watch;
mod reload;
mod shipped_plugins;
mod shutdown;
mod static_responses;
mod streaming;
mod tls;
mod traffic;

mod upstream_tls;
mod websocket;
