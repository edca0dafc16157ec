//! Where the Spin app's component comes from: `LIVESHOP_SPIN_APP` (a prebuilt `.wasm`), or a
//! release build of `functions/spin` for `wasm32-wasip2` (what `spin build` runs, per
//! `spin.toml`), in a target directory of its own beside the caller's.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

const TARGET: &str = "wasm32-wasip2";

/// The app's `.wasm`, built if need be (a no-op when nothing changed).
pub fn component() -> anyhow::Result<PathBuf> {
    if let Some(prebuilt) = std::env::var_os("LIVESHOP_SPIN_APP") {
        return Ok(prebuilt.into());
    }
    let workspace =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("spin-host/ sits in the workspace")?;
    let app = workspace.join("functions/spin");
    // Its own directory: the outer cargo may hold the lock on its own while tests run.
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(format!("{}-spin", dir.to_string_lossy())),
        None => workspace.join("target/spin"),
    };
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&app)
        .args(["build", "--release", "--locked", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .context("cannot run cargo for functions/spin")?;
    anyhow::ensure!(status.success(), "building functions/spin for {TARGET} failed ({status})");
    Ok(target_dir.join(TARGET).join("release/liveshop_spin.wasm"))
}
