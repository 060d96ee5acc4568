//! `reign-plot RESULTS OUT.svg`: draws one `bench/compare.sh` run — the
//! latency distributions (p50, p99, p999 of each system's round trip or
//! hop, medians over the rounds) and the throughput bars — into one SVG
//! image, with the plotters crate. Reads the raw `round=N name=X key=v …`
//! lines compare.sh keeps in `results.txt`; a system or key that the run
//! lacks (no anchors, a failed scenario) is left out.

use std::collections::BTreeMap;

use plotters::prelude::*;

/// The image's size in pixels.
const SIZE: (u32, u32) = (1200, 560);

/// Latency series: (label, scenario name), each drawn at p50, p99, p999.
const LATENCY: [(&str, &str); 8] = [
    ("reign round trip, 2 processes", "reign_pingpong"),
    ("raw TCP round trip", "tcp_pingpong"),
    ("Erlang distribution round trip", "erlang_dist_pingpong"),
    ("reign request/reply", "reign_reqrep"),
    ("NATS request/reply", "nats_reqrep"),
    ("reign request/reply under a flood", "reign_reqrep_loaded"),
    ("reign one hop, 1 process", "reign_hop"),
    ("raw TCP one-way hop, 1 process", "tcp_hop"),
];

/// Throughput bars: (label, scenario name, key), in msg/s.
const THROUGHPUT: [(&str, &str, &str); 9] = [
    ("reign one-way 64 B", "reign_oneway_64", "msgs_per_s"),
    ("reign raw 64 B", "reign_oneway_raw_64", "msgs_per_s"),
    (
        "reign raw 64 B, batches",
        "reign_oneway_batch_64",
        "msgs_per_s",
    ),
    ("reign pub/sub 64 B", "reign_pubsub_1", "deliveries_per_s"),
    ("NATS pub/sub 64 B", "nats_pubsub", "msgs_per_s"),
    ("Erlang dist one-way", "erlang_dist_oneway", "msgs_per_s"),
    ("reign local 1→1", "reign_local_1to1", "msgs_per_s"),
    ("tokio mpsc 1→1", "tokio_mpsc_1to1", "msgs_per_s"),
    ("Erlang local", "erlang_local_oneway", "msgs_per_s"),
];

type Runs = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

fn load(text: &str) -> Runs {
    let mut runs = Runs::new();
    for line in text.lines() {
        let Some(start) = line.find("name=") else {
            continue;
        };
        if line.starts_with('#') || line.contains("error=") {
            continue;
        }
        let fields: BTreeMap<&str, &str> = line[start..]
            .split_whitespace()
            .filter_map(|t| t.split_once('='))
            .collect();
        let Some(name) = fields.get("name") else {
            continue;
        };
        for (key, value) in &fields {
            if let Ok(v) = value.parse::<f64>() {
                runs.entry(name.to_string())
                    .or_default()
                    .entry(key.to_string())
                    .or_default()
                    .push(v);
            }
        }
    }
    runs
}

fn median(runs: &Runs, name: &str, key: &str) -> Option<f64> {
    let mut v = runs.get(name)?.get(key)?.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: reign-plot RESULTS OUT.svg");
        std::process::exit(2);
    }
    let text = match std::fs::read_to_string(&args[1]) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("reign-plot: {}: {e}", args[1]);
            std::process::exit(1);
        }
    };
    if let Err(e) = draw(&load(&text), &args[2]) {
        eprintln!("reign-plot: {e}");
        std::process::exit(1);
    }
}

fn draw(runs: &Runs, out: &str) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(SIZE.0 * 11 / 20);

    // Latency: one line per system over p50, p99, p999 (log scale, µs).
    let series: Vec<(&str, Vec<(f64, f64)>)> = LATENCY
        .iter()
        .filter_map(|(label, name)| {
            let points: Vec<(f64, f64)> = ["p50_us", "p99_us", "p999_us"]
                .iter()
                .enumerate()
                .filter_map(|(i, key)| median(runs, name, key).map(|v| (i as f64, v)))
                .collect();
            (!points.is_empty()).then_some((*label, points))
        })
        .collect();
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
        .fold(10.0f64, f64::max);
    let mut chart = ChartBuilder::on(&left)
        .caption("latency, 64 B (median over rounds)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.2f64..2.2f64, (1.0f64..top * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(3)
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "p50".into(),
            1 => "p99".into(),
            2 => "p999".into(),
            _ => String::new(),
        })
        .y_desc("µs")
        .draw()?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()?;

    // Throughput: one bar per system (millions of messages per second).
    let bars: Vec<(&str, f64)> = THROUGHPUT
        .iter()
        .filter_map(|(label, name, key)| median(runs, name, key).map(|v| (*label, v / 1e6)))
        .collect();
    let most = bars.iter().map(|b| b.1).fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption("throughput (median, M msg/s)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(150)
        .build_cartesian_2d(0f64..most * 1.15, 0f64..bars.len().max(1) as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len().max(1) * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (y - 0.5).round();
            if (y - 0.5 - i).abs() < 0.01 && i >= 0.0 {
                bars.get(bars.len() - 1 - i as usize)
                    .map(|b| b.0.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("M msg/s")
        .draw()?;
    let n = bars.len();
    chart.draw_series(bars.iter().enumerate().map(|(i, (label, v))| {
        let y = (n - 1 - i) as f64;
        let color = if label.starts_with("reign") {
            RGBColor(200, 60, 40)
        } else {
            RGBColor(90, 110, 140)
        };
        Rectangle::new([(0.0, y + 0.15), (*v, y + 0.85)], color.filled())
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        let y = (n - 1 - i) as f64 + 0.5;
        Text::new(format!("{v:.2}"), (*v, y), ("sans-serif", 12))
    }))?;
    root.present()?;
    Ok(())
}
