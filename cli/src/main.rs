//! `reign`: make cluster certificates, run a node, or run the demo.

use clap::{Parser, Subcommand};
use reign_cli::{demo, init, node, status};

#[derive(Parser)]
#[command(
    name = "reign",
    version,
    about = "Erlang-like clustering and messaging"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a cluster CA, node certificates and a spec (like reign_init);
    /// on an existing cluster: add nodes, renew certificates, roll the CA over.
    Init(init::InitArgs),
    /// Run one node of a cluster until SIGINT or SIGTERM.
    Node(node::NodeArgs),
    /// Show a running node and its peers, read from its admin endpoint.
    Status(status::StatusArgs),
    /// Start a throw-away cluster on loopback and show every capability.
    Demo(demo::DemoArgs),
}

/// Logs to stderr at `default` level (or `RUST_LOG`), in `format`.
fn init_logs(default: &str, format: node::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        node::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        node::LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => {
            init_logs("info", node::LogFormat::Text);
            init::run(&args).map(|report| {
                for line in &report.lines {
                    println!("{line}");
                }
            })
        }
        Command::Node(args) => {
            init_logs("info", args.log_format);
            node::run(args)
        }
        Command::Status(args) => {
            init_logs("error", node::LogFormat::Text);
            status::run(&args)
        }
        Command::Demo(args) => {
            init_logs("error", node::LogFormat::Text);
            demo::run(args)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reign: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
