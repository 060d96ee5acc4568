//! A large full mesh in the simulator: connect, split in two, register
//! names on both sides, heal, and report how long (virtual time) until every
//! registry view agrees, with the wall time and memory it took.
//!
//! With `join`, every node's spec lists only node 0 instead, and the
//! report is how long the cluster takes to form by joining through it.
//!
//! ```sh
//! cargo run --release -p reign-proto --features sim --example sim_scale -- 256
//! cargo run --release -p reign-proto --features sim --example sim_scale -- 64 join
//! ```

fn main() {
    let nodes: u16 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    if std::env::args().nth(2).as_deref() == Some("join") {
        let report = reign_proto::sim::scale::join_through_seed(nodes, 1);
        println!(
            "name=reign_sim_join nodes={} wall_secs={:.1} converged_after_virtual_ms={}",
            report.nodes,
            report.wall.as_secs_f64(),
            report.converged_after.as_millis(),
        );
        return;
    }
    let report = reign_proto::sim::scale::partition_heal(nodes, 1);
    println!(
        "name=reign_sim_scale nodes={} wall_secs={:.1} connected_after_virtual_ms={} converged_after_virtual_ms={} max_node_buffered_b={} rss_kb={} rss_per_node_kb={}",
        report.nodes,
        report.wall.as_secs_f64(),
        report.connected_after.as_millis(),
        report.converged_after.as_millis(),
        report.max_node_buffered,
        report.rss_kb,
        report.rss_kb / u64::from(report.nodes.max(1)),
    );
}
