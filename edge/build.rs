//! Builds the room and shop components (`functions/component`, one feature each) for
//! `wasm32-wasip2` and tells the crate where they are (`LIVESHOP_ROOM_COMPONENT`,
//! `LIVESHOP_SHOP_COMPONENT`), so a plain `cargo build` or `cargo test` from a clean clone has
//! them. Set either variable to a prebuilt `.wasm` to skip its build.
//!
//! The nested cargo gets its own target dir: sharing the outer one would wait forever on the
//! build-directory lock the outer cargo holds while this script runs.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

/// Variables the outer cargo sets that would change or break the nested build: flags meant for
/// the host build (coverage, sanitizers), a redirected or per-target build, the outer jobserver,
/// and clippy's wrapper.
const OUTER_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
];

/// `(feature, variable)` per actor kind.
const KINDS: [(&str, &str); 2] = [("room", "LIVESHOP_ROOM_COMPONENT"), ("shop", "LIVESHOP_SHOP_COMPONENT")];

fn main() {
    for (feature, var) in KINDS {
        println!("cargo:rerun-if-env-changed={var}");
        let wasm = match env::var(var) {
            Ok(prebuilt) => {
                println!("cargo:rerun-if-changed={prebuilt}");
                prebuilt
            }
            Err(_) => build_kind(feature).display().to_string(),
        };
        println!("cargo:rustc-env={var}={wasm}");
    }
}

/// Builds the component with `feature` and copies it to `<feature>.wasm` beside the build, so
/// the next kind's build (same target dir, so shared dependencies) does not overwrite it.
fn build_kind(feature: &str) -> PathBuf {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("edge/ sits in the workspace");
    for watched in [
        "functions/room",
        "functions/shop",
        "functions/journal",
        "functions/identity",
        "functions/component",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }

    // Beside the outer build's artifacts, wherever those are.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("component");
    build(workspace, &target_dir, feature);

    let release = target_dir.join(TARGET).join("release");
    let built = release.join("liveshop_component.wasm");
    let wasm = release.join(format!("{feature}.wasm"));
    std::fs::copy(&built, &wasm)
        .unwrap_or_else(|e| panic!("the nested build left no {} ({e})", built.display()));
    wasm
}

fn build(workspace: &Path, target_dir: &Path, feature: &str) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "-p", "liveshop-component", "--target", TARGET])
        .args(["--no-default-features", "--features", feature])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        // Cargo reads `cargo:` lines from this script's stdout: keep the nested output off it.
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit());
    for var in OUTER_ENV {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo for the components");
    assert!(
        status.success(),
        "building liveshop-component for {TARGET} failed ({status}); is the target installed? \
         `rustup target add {TARGET}`"
    );
}
