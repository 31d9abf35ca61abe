//! The integration tests, compiled into one binary.

mod plugins;
