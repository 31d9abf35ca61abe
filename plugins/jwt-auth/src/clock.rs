//! The wall clock, read through the one WASI function it needs.
//!
//! `std::time::SystemTime::now()` goes through wasi-libc's `clock_gettime`, which links the
//! monotonic clock as well and one more shim instance into the component; each fresh instance
//! pays for resolving and instantiating those (-2.6k instructions per request measured,
//! `benches/README.md`, "Session 12"). The package version here only keeps this subset of the
//! interface apart from wasi-libc's full copy when the component is linked; the import is
//! merged with the other `wasi:clocks@0.2.x` ones, and the host links any 0.2 version.

#[cfg(target_arch = "wasm32")]
mod wasi {
    gatehouse_sdk::__private::wit_bindgen::generate!({
        inline: "
            package wasi:clocks@0.2.1;
            interface wall-clock {
                record datetime { seconds: u64, nanoseconds: u32 }
                now: func() -> datetime;
            }
            world jwt-auth-clock { import wall-clock; }
        ",
        world: "jwt-auth-clock",
        runtime_path: "gatehouse_sdk::__private::wit_bindgen::rt",
    });
}

/// Seconds since the Unix epoch, from the host's wall clock (which the gateway grants plugins).
#[cfg(target_arch = "wasm32")]
pub fn now_secs() -> u64 {
    wasi::wasi::clocks::wall_clock::now().seconds
}

/// Natively (unit tests): the system clock.
#[cfg(not(target_arch = "wasm32"))]
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
