//! Copies envoy-types' FileDescriptorSet (`src/generated/types.bin`, shipped in the crate
//! source but not exported) into `OUT_DIR`, so `render` can `include_bytes!` it and build a
//! `prost_reflect::DescriptorPool` that matches the generated types exactly.
//!
//! The envoy-types source directory is found through `cargo metadata` (the copy Cargo
//! actually resolved for this crate), with a fallback to scanning the Cargo registry.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The envoy-types version this crate is written against (see the workspace Cargo.toml).
const ENVOY_TYPES_VERSION: &str = "0.7.7";
const DESCRIPTOR_SET: &str = "src/generated/types.bin";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");

    let mut tried = Vec::new();
    let source = from_cargo_metadata(&mut tried)
        .or_else(|| from_registry(&mut tried))
        .unwrap_or_else(|| {
            panic!(
                "lanyard-xds build.rs: cannot find envoy-types' {DESCRIPTOR_SET}.\n\
                 It ships inside the envoy-types {ENVOY_TYPES_VERSION} crate source; make sure the \
                 crate is downloaded (`cargo fetch`) and CARGO_HOME points at the registry.\n\
                 Looked at:\n  {}",
                tried.join("\n  ")
            )
        });
    println!("cargo:rerun-if-changed={}", source.display());

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = out_dir.join("envoy_types_descriptor_set.bin");
    fs::copy(&source, &target).unwrap_or_else(|e| {
        panic!(
            "lanyard-xds build.rs: copying {} to {}: {e}",
            source.display(),
            target.display()
        )
    });
}

/// Asks Cargo where the envoy-types it resolved for this package lives.
fn from_cargo_metadata(tried: &mut Vec<String>) -> Option<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")?;
    let mut command = Command::new(cargo);
    command
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(&manifest_dir);
    // Without a platform filter Cargo wants every platform's packages (Windows-only crates
    // included), which an offline machine has not downloaded.
    if let Some(target) = env::var_os("TARGET") {
        command.arg("--filter-platform").arg(target);
    }
    let output = command.output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            tried.push(format!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
            return None;
        }
        Err(e) => {
            tried.push(format!("cargo metadata could not run: {e}"));
            return None;
        }
    };
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let packages = metadata["packages"].as_array()?;
    let mut candidates: Vec<&serde_json::Value> = packages
        .iter()
        .filter(|p| p["name"] == "envoy-types")
        .collect();
    // Prefer the version this crate is written against when several are in the graph.
    candidates.sort_by_key(|p| p["version"] != ENVOY_TYPES_VERSION);
    for package in candidates {
        let manifest = Path::new(package["manifest_path"].as_str()?);
        let file = manifest.parent()?.join(DESCRIPTOR_SET);
        if file.is_file() {
            return Some(file);
        }
        tried.push(file.display().to_string());
    }
    None
}

/// Scans `$CARGO_HOME/registry/src/*/envoy-types-<version>/`.
fn from_registry(tried: &mut Vec<String>) -> Option<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    let registry = cargo_home.join("registry").join("src");
    let mut indexes: Vec<PathBuf> = fs::read_dir(&registry)
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    indexes.sort();
    for index in indexes {
        let file = index
            .join(format!("envoy-types-{ENVOY_TYPES_VERSION}"))
            .join(DESCRIPTOR_SET);
        if file.is_file() {
            return Some(file);
        }
        tried.push(file.display().to_string());
    }
    if tried.is_empty() || !registry.is_dir() {
        tried.push(format!("{} (no registry sources)", registry.display()));
    }
    None
}
