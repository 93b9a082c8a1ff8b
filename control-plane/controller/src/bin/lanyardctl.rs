//! `lanyardctl`: look at what Lanyard makes of your manifests, without a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lanyard_controller::ctl::{self, TranslateRequest};
use lanyard_controller::proxy::ProxySelector;
use lanyard_controller::report::{Format, Show};
use lanyard_controller::snapshot::{DEFAULT_CLUSTER_DOMAIN, Settings};
use lanyard_index::status::DEFAULT_CONTROLLER_NAME;
use lanyard_model::NamespaceName;

#[derive(Parser)]
#[command(name = "lanyardctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Experimental commands.
    #[command(subcommand)]
    X(Experimental),
}

#[derive(Subcommand)]
enum Experimental {
    /// Translate manifests as the controller would, and print route status, diagnostics,
    /// the model and what one proxy receives. Exits 1 when the input has errors.
    Translate(TranslateArgs),
}

#[derive(Args)]
struct TranslateArgs {
    /// A manifest file or a directory of them (*.yaml, *.yml, recursively). Repeatable.
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true)]
    files: Vec<PathBuf>,

    /// Show what the sidecar of this pod receives.
    #[arg(long, value_name = "NAMESPACE/POD", conflicts_with = "namespace")]
    proxy: Option<ProxySelector>,

    /// Show what a client in this namespace without a pod receives [default: default].
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    output: Format,

    /// Which parts to show; diagnostics are always shown.
    #[arg(long, value_enum, default_value_t = Show::All)]
    show: Show,

    /// The cluster's DNS domain.
    #[arg(long, default_value = DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,

    /// The controllerName written into route status.
    #[arg(long, default_value = DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
}

fn main() -> ExitCode {
    let Command::X(Experimental::Translate(args)) = Cli::parse().command;
    match translate(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lanyardctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn translate(args: TranslateArgs) -> anyhow::Result<ExitCode> {
    let proxy = match (args.proxy, args.namespace) {
        (Some(proxy), _) => proxy,
        (None, Some(namespace)) => ProxySelector::Namespace(NamespaceName::new(namespace)),
        (None, None) => ProxySelector::default(),
    };
    let output = ctl::translate_files(&TranslateRequest {
        paths: args.files,
        proxy,
        show: args.show,
        format: args.output,
        settings: Settings {
            controller_name: args.controller_name,
            cluster_domain: args.cluster_domain,
            ..Default::default()
        },
    })?;
    print!("{}", output.text);
    if output.errors > 0 {
        eprintln!(
            "lanyardctl: the input has {} error(s), see diagnostics",
            output.errors
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
