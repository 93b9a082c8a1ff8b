//! `lanyard-crdgen`: writes Lanyard's CRDs (built from the Rust types) to `crds/`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;

/// Writes Lanyard's CustomResourceDefinitions, generated from its Rust types.
#[derive(Debug, Parser)]
struct Args {
    /// Directory to write into (the workspace's `crds/` when run from the workspace root).
    #[arg(long, default_value = "crds")]
    out: PathBuf,
    /// Write nothing; fail if a file differs from what would be written.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut stale = Vec::new();
    for file in lanyard_webhook::crds::all() {
        let path = args.out.join(file.path);
        let text = file.render();
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(text.as_str()) {
            continue;
        }
        if args.check {
            stale.push(path.display().to_string());
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !stale.is_empty() {
        bail!(
            "out of date: {}; run `{}`",
            stale.join(", "),
            lanyard_webhook::crds::GENERATE_COMMAND
        );
    }
    Ok(())
}
