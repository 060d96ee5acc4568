//! A large full mesh in the simulator: connect, split in two, register
//! names on both sides, heal, and report how long (virtual time) until every
//! registry view agrees, with the wall time and memory it took.
//!
//! With `join`, every node's spec lists only the first node instead, and
//! the report is how long the cluster takes to form by joining through it.
//!
//! With `idle`, the mesh connects, sends one message over every link each
//! way, idles for ten virtual seconds, and reports what the idle mesh holds
//! on the heap (counted by this example's allocator): per node, and per
//! link (the difference against a mesh of half as many nodes, so what every
//! node pays regardless of its peers is left out).
//!
//! `idle-once` is `idle` without the mesh of half as many nodes first: no
//! per-link split, but the peak memory is the one mesh's, for the largest
//! meshes (1,024 nodes).
//!
//! With `form`, the report is what forming the mesh sends (handshakes,
//! membership, pings; bytes per node), once with every node's spec listing
//! every node and once joining through the first node, each up to two
//! virtual seconds after the mesh formed (a few gossip rounds).
//!
//! A third argument numbers the nodes from that id (default 0), to run
//! clusters whose ids pass 255.
//!
//! ```sh
//! cargo run --release -p reign-proto --features sim --example sim_scale -- 256
//! cargo run --release -p reign-proto --features sim --example sim_scale -- 64 join
//! cargo run --release -p reign-proto --features sim --example sim_scale -- 1024 idle-once 64000
//! SIM_PING_MS=1000 cargo run --release -p reign-proto --features sim --example sim_scale -- 64 form
//! SIM_PING_MS=1000 cargo run --release -p reign-proto --features sim --example sim_scale -- 512
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reign_proto::sim::{scale, Sim, SimConfig};
use reign_proto::Tuning;

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed through to `System` unchanged; only a
// counter is updated besides.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Virtual time an idle mesh idles before it is measured: three ping
/// intervals of [`idle_tuning`], so every link has given back what it does
/// not need.
const IDLE: Duration = Duration::from_secs(3);

/// `SIM_PING_MS` sets every mode's ping interval (default: 100 ms, 1 s in
/// `idle`); pings on every link are most of a big mesh's wall clock.
fn config(nodes: u16, first_id: u16) -> SimConfig {
    let mut tuning = Tuning::fast();
    if let Some(ms) = ping_ms() {
        tuning.ping_interval = Duration::from_millis(ms);
        tuning.read_deadline = tuning.read_deadline.max(5 * tuning.ping_interval);
    }
    SimConfig {
        nodes,
        first_id,
        seed: 1,
        tuning,
        ..SimConfig::default()
    }
}

fn ping_ms() -> Option<u64> {
    std::env::var("SIM_PING_MS").ok()?.parse().ok()
}

/// `Tuning::fast()` with a ping a second instead of ten: pings on every
/// link are most of what an idle simulated mesh costs in wall clock, and
/// the idle figures do not depend on how often they go.
fn idle_tuning() -> Tuning {
    Tuning {
        ping_interval: Duration::from_secs(1),
        read_deadline: Duration::from_secs(5),
        ..Tuning::fast()
    }
}

/// Bytes all nodes sent from the start until two virtual seconds after
/// the mesh formed with one membership view.
fn formation_bytes(config: SimConfig) -> u64 {
    let nodes = config.nodes;
    let mut sim = Sim::new(config);
    while !(sim.fully_connected() && sim.one_membership_view()) {
        sim.run_for(Duration::from_millis(10));
        assert!(
            sim.elapsed() < Duration::from_secs(60),
            "{nodes} nodes never formed a mesh"
        );
    }
    sim.run_for(Duration::from_secs(2));
    sim.bytes_transmitted()
}

/// Heap bytes an idle mesh of `nodes` holds, with its report and the
/// simulation (still holding them).
fn idle_heap(nodes: u16, first_id: u16) -> (usize, scale::IdleReport, Sim) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut config = config(nodes, first_id);
    if ping_ms().is_none() {
        config.tuning = idle_tuning();
    }
    let (report, sim) = scale::idle_mesh(config, IDLE);
    let heap = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    (heap, report, sim)
}

fn main() {
    let nodes: u16 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let first_id: u16 = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match std::env::args().nth(2).as_deref() {
        Some("join") => {
            let report = scale::join_through_seed(config(nodes, first_id));
            println!(
                "name=reign_sim_join nodes={} wall_secs={:.1} converged_after_virtual_ms={}",
                report.nodes,
                report.wall.as_secs_f64(),
                report.converged_after.as_millis(),
            );
        }
        Some("form") => {
            let spec = formation_bytes(config(nodes, first_id));
            let joined = formation_bytes(SimConfig {
                seeds: vec![reign_proto::NodeId(first_id)],
                ..config(nodes, first_id)
            });
            let per_node = |b: u64| b / u64::from(nodes.max(1));
            println!(
                "name=reign_sim_form nodes={nodes} spec_bytes_per_node={} seed_join_bytes_per_node={}",
                per_node(spec),
                per_node(joined),
            );
        }
        Some(mode @ ("idle" | "idle-once")) => {
            let half = (nodes / 2).max(2);
            let small_heap = (mode == "idle").then(|| {
                let (small_heap, _, small) = idle_heap(half, first_id);
                drop(small);
                small_heap
            });
            let (heap, report, sim) = idle_heap(nodes, first_id);
            let (n, h) = (f64::from(nodes), f64::from(half));
            // heap(n) = n × (base + (n − 1) × link): two sizes give both.
            let per_node = heap as f64 / n;
            // Without the half-size mesh, every byte counts as the links'.
            let per_link = match small_heap {
                Some(small_heap) => (per_node - small_heap as f64 / h) / (n - h),
                None => per_node / (n - 1.0),
            };
            let base = per_node - (n - 1.0) * per_link;
            println!(
                "name=reign_sim_idle nodes={} first_id={} wall_connect_secs={:.1} wall_secs={:.1} connected_after_virtual_ms={} heap_per_node_kb={:.0} heap_per_link_b={:.0} heap_node_base_kb={:.0} max_node_link_buffers_b={} idle_bytes_per_node_per_sec={} registry_bytes_per_name={} rss_kb={} rss_per_node_kb={}",
                report.nodes,
                first_id,
                report.wall_connect.as_secs_f64(),
                report.wall.as_secs_f64(),
                report.connected_after.as_millis(),
                per_node / 1024.0,
                per_link,
                base / 1024.0,
                report.max_node_buffers,
                report.idle_bytes_per_sec / u64::from(nodes.max(1)),
                report.registry_bytes_per_name,
                report.rss_kb,
                report.rss_kb / u64::from(nodes.max(1)),
            );
            // Left to the exit (a heap profiler sees the idle mesh as what
            // is still allocated), and dropping a big mesh takes a while.
            std::mem::forget(sim);
        }
        _ => {
            let report = scale::partition_heal(config(nodes, first_id));
            println!(
                "name=reign_sim_scale nodes={} wall_secs={:.1} connected_after_virtual_ms={} converged_after_virtual_ms={} max_node_buffered_b={} heal_dials={} heal_mb={:.1} rss_kb={} rss_per_node_kb={}",
                report.nodes,
                report.wall.as_secs_f64(),
                report.connected_after.as_millis(),
                report.converged_after.as_millis(),
                report.max_node_buffered,
                report.heal_dials,
                report.heal_bytes as f64 / 1e6,
                report.rss_kb,
                report.rss_kb / u64::from(report.nodes.max(1)),
            );
        }
    }
}
