//! Builds the room component (`functions/component`) for `wasm32-wasip2` and tells the crate
//! where it is (`LIVESHOP_ROOM_COMPONENT`), so a plain `cargo build` or `cargo test` from a clean
//! clone has it. Set `LIVESHOP_ROOM_COMPONENT` to a prebuilt `.wasm` to skip the build.
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

fn main() {
    println!("cargo:rerun-if-env-changed=LIVESHOP_ROOM_COMPONENT");
    if let Ok(prebuilt) = env::var("LIVESHOP_ROOM_COMPONENT") {
        println!("cargo:rerun-if-changed={prebuilt}");
        println!("cargo:rustc-env=LIVESHOP_ROOM_COMPONENT={prebuilt}");
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("edge/ sits in the workspace");
    for watched in
        ["functions/room", "functions/identity", "functions/component", "wit", "Cargo.lock", "Cargo.toml"]
    {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }

    // Beside the outer build's artifacts, wherever those are.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("component");
    build(workspace, &target_dir);

    let wasm = target_dir.join(TARGET).join("release").join("liveshop_component.wasm");
    assert!(wasm.is_file(), "the nested build left no {}", wasm.display());
    println!("cargo:rustc-env=LIVESHOP_ROOM_COMPONENT={}", wasm.display());
}

fn build(workspace: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "-p", "liveshop-component", "--target", TARGET])
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
    let status = cmd.status().expect("cannot run cargo for the room component");
    assert!(
        status.success(),
        "building liveshop-component for {TARGET} failed ({status}); is the target installed? \
         `rustup target add {TARGET}`"
    );
}
