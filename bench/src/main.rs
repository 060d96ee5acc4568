//! reign's benchmarks. Each scenario prints one machine-readable line on
//! stdout in the anchors' format (`name=reign_<scenario> key=value …`, the
//! same keys as `../shared/anchors` where they mean the same thing) and a
//! readable summary on stderr. Cross-node scenarios run node 1 (and 2) as
//! child processes of this binary, over mutual TLS on 127.0.0.1, like the
//! Erlang and NATS anchors run separate OS processes.
//!
//! ```sh
//! cargo run --release -p reign-bench -- all
//! bench/compare.sh 5      # ours and the anchors, interleaved, with ratios
//! ```
#![allow(unsafe_code)] // the counting allocator below; see its SAFETY note

mod alloc;
mod cluster;
mod scenarios;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "reign-bench",
    about = "reign benchmarks (release builds only mean anything)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every scenario once, with the default sizes.
    All,
    /// Local send+receive through a mailbox, beside tokio::sync::mpsc.
    Local {
        /// Messages per run.
        #[arg(long, default_value_t = 5_000_000)]
        messages: u64,
    },
    /// One-way throughput between two nodes, counted by the receiver.
    Oneway {
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Messages (default: about 1 GB or 4M, whichever is fewer).
        #[arg(long)]
        messages: Option<u64>,
        /// Send raw bytes (`Address::send_bytes`, no serde) instead of a
        /// serde struct; the sequence number rides in the payload's first
        /// bytes, so `--size` must be at least 10.
        #[arg(long)]
        raw: bool,
        /// With `--raw`: messages per `send_bytes_batch` call (1: one
        /// `send_bytes` per message).
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Round trips between mailboxes on two nodes.
    Pingpong {
        /// Round trips.
        #[arg(long, default_value_t = 20_000)]
        round_trips: usize,
    },
    /// One hop inside one process (Go reign's BenchmarkMinimalMessageSend
    /// shape), beside a raw loopback TCP one-way hop.
    Hop {
        /// Hops per round.
        #[arg(long, default_value_t = 10_000)]
        hops: usize,
        /// Rounds, reign and raw TCP interleaved.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Raw TCP 64-byte ping-pong on loopback: the floor for latency.
    TcpPingpong {
        /// Round trips.
        #[arg(long, default_value_t = 20_000)]
        round_trips: usize,
    },
    /// Request/reply round trips to a service member on another node.
    Reqrep {
        /// Sequential requests.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
    },
    /// Request/reply latency while another thread floods the same link.
    Loaded {
        /// Requests measured, unloaded and then under the flood.
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
    },
    /// One node flooding N peers at once (the one-driver ceiling).
    Spread {
        /// Peers flooded at once, one sending thread each.
        #[arg(long, default_value_t = 2)]
        peers: u16,
        /// Messages per peer.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
    },
    /// Publications fanned out to subscribers on another node.
    Pubsub {
        /// Subscribers on the other node.
        #[arg(long, default_value_t = 1)]
        subscribers: u32,
        /// Publications.
        #[arg(long, default_value_t = 500_000)]
        messages: u64,
    },
    /// Streaming through a tunnel.
    Tunnel {
        /// MiB to stream.
        #[arg(long, default_value_t = 512)]
        mib: usize,
    },
    /// Names registered on one node until visible on two others.
    Registry {
        /// Names: at most a node's default limit
        /// (`reign_proto::registry::MAX_ENTRIES_PER_NODE`, 8192).
        #[arg(long, default_value_t = 8_000)]
        names: usize,
    },
    /// Register, sync, lookup (on the other node), unregister of a name on
    /// a 2-node cluster in this process, beside round trips between the
    /// same two nodes.
    Regcycle {
        /// Cycles (and round trips) per round.
        #[arg(long, default_value_t = 2_000)]
        cycles: usize,
        /// Rounds, cycles and round trips interleaved.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Heap allocations per message on the steady-state paths.
    Alloc,
    /// (internal) Runs a node with the built-in service until stdin closes.
    #[command(hide = true)]
    Serve {
        /// The spec file.
        #[arg(long)]
        spec: std::path::PathBuf,
        /// The node id.
        #[arg(long)]
        id: u16,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::All => scenarios::all(),
        Command::Local { messages } => scenarios::local(messages),
        Command::Oneway {
            size,
            messages,
            raw: false,
            ..
        } => scenarios::oneway(size, messages),
        Command::Oneway {
            size,
            messages,
            raw: true,
            batch,
        } => scenarios::oneway_raw(size, messages, batch),
        Command::Pingpong { round_trips } => scenarios::pingpong(round_trips),
        Command::Hop { hops, rounds } => scenarios::hop(hops, rounds),
        Command::TcpPingpong { round_trips } => scenarios::tcp_pingpong(round_trips),
        Command::Reqrep { requests } => scenarios::reqrep(requests),
        Command::Loaded { requests } => scenarios::loaded(requests),
        Command::Spread { peers, messages } => scenarios::spread(peers, messages),
        Command::Pubsub {
            subscribers,
            messages,
        } => scenarios::pubsub(subscribers, messages),
        Command::Tunnel { mib } => scenarios::tunnel(mib),
        Command::Registry { names } => scenarios::registry(names),
        Command::Regcycle { cycles, rounds } => scenarios::regcycle(cycles, rounds),
        Command::Alloc => scenarios::alloc(),
        Command::Serve { spec, id } => cluster::serve(&spec, id),
    };
    if let Err(e) = result {
        eprintln!("reign-bench: {e}");
        std::process::exit(1);
    }
}
