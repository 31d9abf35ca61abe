//! Builds the guest plugins once per test run and hands out their bytes, plus WAT-made
//! components and modules that are malformed or hostile on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Every guest crate under plugins/: the runtime's test guests and the shipped plugins.
const GUESTS: [&str; 9] = [
    "noop",
    "header-rewrite",
    "test-kit",
    "jwt-auth",
    "api-key",
    "aggregate",
    "fallback",
    "grpc-transcode",
    // Built against the previous WIT (wit/0.1.0): the gateway must keep loading it.
    "wit-0-1-0",
];

/// Build every guest crate for wasm32-wasip2 (once per process, in one cargo call, shared by
/// the plugin-runtime tests, the shipped-plugin tests and the benches); the output dir.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = workspace().join("target/guests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args(["build", "--release", "--target", "wasm32-wasip2"]);
        for name in GUESTS {
            cmd.args(["-p", &format!("{name}-plugin")]);
        }
        let out = cmd
            .args(["--config", "profile.release.debug=false"])
            .args(["--config", "profile.release.strip=true"])
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building guest plugins failed (is `rustup target add wasm32-wasip2` done?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("wasm32-wasip2/release")
    })
}

/// The path of a built guest, by crate name without `-plugin` (see `GUESTS`).
pub fn path(name: &str) -> PathBuf {
    built().join(format!("{}_plugin.wasm", name.replace('-', "_")))
}

/// The bytes of a built guest.
pub fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(path(name)).expect("guest was built")
}

/// A core module, not a component.
pub fn core_module() -> Vec<u8> {
    wat::parse_str("(module (func (export \"on-request\")))").expect("valid wat")
}

/// A component for some other world: it imports an interface the gateway does not provide.
pub fn other_world() -> Vec<u8> {
    wat::parse_str(
        r#"(component
             (import "acme:billing/ledger@1.0.0" (instance (export "post" (func))))
           )"#,
    )
    .expect("valid wat")
}

/// A component that imports nothing and exports no hook.
pub fn no_hooks() -> Vec<u8> {
    wat::parse_str("(component)").expect("valid wat")
}

/// A component exporting `request-hook` with the wrong function type.
pub fn wrong_hook_shape() -> Vec<u8> {
    wat::parse_str(
        r#"(component
             (core module $m (func (export "f")))
             (core instance $i (instantiate $m))
             (func $f (canon lift (core func $i "f")))
             (instance $hook (export "on-request" (func $f)))
             (export "gatehouse:plugin/request-hook@0.1.0" (instance $hook))
           )"#,
    )
    .expect("valid wat")
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh empty directory.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// A path inside.
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
