//! End-to-end tests of the shipped plugins (plugins/jwt-auth, api-key, aggregate, fallback):
//! the real compiled components, loaded by the real gateway from its plugins directory, in
//! front of real origins on 127.0.0.1:0.

mod aggregate;
mod api_key;
mod fallback;
mod jwt;
pub mod kit;
