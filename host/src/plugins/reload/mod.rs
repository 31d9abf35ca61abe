//! Hot reload: the loader (compile + check), the registry (atomic swap) and the watcher.

pub mod loader;
pub mod registry;
pub mod rollout;
pub mod watcher;
