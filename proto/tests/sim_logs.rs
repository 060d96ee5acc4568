//! Calm logs over long virtual times: a peer that stays down costs one
//! WARN per survivor for the transition and then a summary at 30 s and at
//! doubling intervals (up to one an hour), however many redials fail
//! meanwhile at DEBUG; a peer found again is one INFO. The simulator runs
//! the real cores on a virtual clock, so a minute and an hour take seconds.
//! (`cli/tests/logs.rs` counts the same on real processes, for seconds.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reign_proto::sim::{Sim, SimConfig};
use reign_proto::NodeId;

/// Log lines of this thread, kept as written.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf).into_owned();
        self.0.lock().unwrap().push(line);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Lines from `from` on at `level` ("WARN", "DEBUG", …) naming `node`
    /// and containing `text`.
    fn count(&self, from: usize, level: &str, node: u16, text: &str) -> Vec<String> {
        let node = format!(" node={node} ");
        self.0.lock().unwrap()[from..]
            .iter()
            .filter(|l| l.contains(level) && l.contains(&node) && l.contains(text))
            .cloned()
            .collect()
    }
}

fn capture() -> (Lines, tracing::subscriber::DefaultGuard) {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    (lines, tracing::subscriber::set_default(subscriber))
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_peer_down_for_a_minute_then_an_hour_costs_a_bounded_number_of_warns() {
    let (lines, _guard) = capture();
    // Tuning::fast: redials from 20 ms up to 500 ms apart, so about 120 a
    // minute per survivor.
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        seed: 19,
        ..SimConfig::default()
    });
    sim.run_for(secs(2));
    assert!(sim.fully_connected());
    let start = lines.len();
    for node in 0..3 {
        let loud = lines.count(0, "WARN", node, "");
        assert!(loud.is_empty(), "a start logs no WARN: {loud:#?}");
    }

    sim.crash(NodeId(2));
    let mut report = Vec::new();
    // Over a minute: the transition and the summary at 30 s. Over an hour:
    // summaries at 30, 90, 210, 450, 930 and 1890 s.
    for (span, summaries) in [(secs(60), 1), (secs(3600), 6)] {
        sim.run_for(span - (sim.elapsed() - secs(2)));
        for node in 0..2 {
            let lost = lines.count(start, "WARN", node, "connection lost");
            let summary = lines.count(start, "WARN", node, "still unreachable");
            let warns = lines.count(start, "WARN", node, "");
            let redials = lines.count(start, "DEBUG", node, "dial failed").len();
            report.push(format!(
                "node 2 down {span:?}, node {node}: {} WARN ({} lost, {} summaries), {redials} failed dials at DEBUG",
                warns.len(),
                lost.len(),
                summary.len()
            ));
            assert_eq!(lost.len(), 1, "{warns:#?}");
            assert_eq!(summary.len(), summaries, "{warns:#?}");
            assert_eq!(warns.len(), 1 + summaries, "{warns:#?}");
            assert!(
                redials as u64 >= span.as_secs(),
                "redials go on: {redials} in {span:?}"
            );
            assert!(lines.count(start, "ERROR", node, "").is_empty());
        }
    }
    let last = lines.count(start, "WARN", 0, "still unreachable");
    println!(
        "{}\nlast summary: {}",
        report.join("\n"),
        last[last.len() - 1]
    );

    // Back: one INFO on each survivor, and no WARN.
    let back = lines.len();
    sim.restart(NodeId(2));
    sim.run_for(secs(3));
    assert!(sim.fully_connected());
    for node in 0..2 {
        let up = lines.count(back, "INFO", node, "connection established");
        assert_eq!(up.len(), 1, "{up:#?}");
        assert!(up[0].contains("peer=2") && up[0].contains("failed_dials="));
        assert!(lines.count(back, "WARN", node, "").is_empty());
    }
}
