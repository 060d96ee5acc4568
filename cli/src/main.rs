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

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => {
            init_logs("info");
            init::run(&args).map(|report| {
                for line in &report.lines {
                    println!("{line}");
                }
            })
        }
        Command::Node(args) => {
            init_logs("info");
            node::run(args)
        }
        Command::Status(args) => {
            init_logs("error");
            status::run(&args)
        }
        Command::Demo(args) => {
            init_logs("error");
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
