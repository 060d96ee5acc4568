//! `reign status`: a running node and its peers as a terminal table, read
//! from the node's admin endpoint (`reign node --admin`).
//!
//! The JSON is the endpoint's `/status` ([`Status`]); `--json` prints it
//! as it came, `--watch` redraws every few seconds until interrupted.

use std::time::Duration;

use reign_tokio::admin::Status;

/// Where the node's admin endpoint is and how to show it.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The node's admin endpoint: `HOST:PORT` or an `http://` URL.
    #[arg(long, value_name = "ADDR")]
    pub admin: String,
    /// The endpoint's token, if it has one (sent as `Authorization: Bearer`).
    #[arg(long, env = "REIGN_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the status JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Redraw every SECS seconds (2 if no value) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
}

/// Prints the status once, or keeps redrawing it with `--watch` (errors
/// are shown and retried then; without `--watch` they end the command).
pub fn run(args: &StatusArgs) -> Result<(), String> {
    let url = status_url(&args.admin);
    let Some(every) = args.watch else {
        print!(
            "{}",
            render(&fetch(&url, args.token.as_deref())?, args.json)?
        );
        return Ok(());
    };
    let every = Duration::from_secs(every.max(1));
    loop {
        let screen = match fetch(&url, args.token.as_deref()).and_then(|b| render(&b, args.json)) {
            Ok(screen) => screen,
            Err(e) => format!("reign: {e}\n"),
        };
        // Clear the terminal and draw from its top-left corner.
        print!("\x1b[2J\x1b[H{screen}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::thread::sleep(every);
    }
}

/// The `/status` URL of an endpoint given as `HOST:PORT` or a URL.
pub fn status_url(admin: &str) -> String {
    let base = if admin.starts_with("http://") || admin.starts_with("https://") {
        admin.trim_end_matches('/').to_owned()
    } else {
        format!("http://{admin}")
    };
    format!("{base}/status")
}

fn fetch(url: &str, token: Option<&str>) -> Result<String, String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(mut response) => response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: {e}")),
        Err(ureq::Error::StatusCode(401)) => Err(format!(
            "{url}: the endpoint wants a token (--token or REIGN_ADMIN_TOKEN), or this one is wrong"
        )),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// The JSON as it came (`--json`) or as a table.
fn render(body: &str, json: bool) -> Result<String, String> {
    if json {
        return Ok(format!("{}\n", body.trim_end()));
    }
    let status: Status =
        serde_json::from_str(body).map_err(|e| format!("not a reign status: {e}"))?;
    Ok(table(&status))
}

/// The status as a terminal table: a header for the node, one row per peer.
pub fn table(status: &Status) -> String {
    let counter = |name: &str| status.counters.get(name).copied().unwrap_or(0);
    let dropped: u64 = status
        .counters
        .iter()
        .filter(|(name, _)| name.starts_with("dropped_"))
        .map(|(_, v)| v)
        .sum();
    let up = status.peers.iter().filter(|p| p.state == "up").count();
    let mut out = format!(
        "node {}  reign {}  up {}  listening {}  incarnation {:x}{}\n",
        status.node,
        status.version,
        duration(status.uptime_secs),
        status.listen.as_deref().unwrap_or("-"),
        status.incarnation,
        if status.shutting_down {
            "  SHUTTING DOWN"
        } else {
            ""
        },
    );
    out += &format!(
        "peers {up}/{} up  mailboxes {}  names {}  groups {}  topics {}  sent {}  delivered {}  dropped {dropped}\n\n",
        status.peers.len(),
        status.mailboxes.count,
        status.names.len(),
        status.groups.len(),
        status.topics.len(),
        counter("remote_sent"),
        counter("remote_delivered"),
    );
    let mut rows = vec![[
        "PEER",
        "STATE",
        "RTT",
        "MSGS OUT",
        "MSGS IN",
        "BYTES OUT",
        "BYTES IN",
        "QUEUED",
        "RECONNECTS",
        "LAST CLOSE",
    ]
    .map(String::from)];
    for p in &status.peers {
        rows.push([
            p.node.to_string(),
            p.state.clone(),
            p.rtt_us
                .map_or("-".into(), |us| format!("{:.2} ms", us as f64 / 1000.0)),
            p.messages_out.to_string(),
            p.messages_in.to_string(),
            bytes(p.bytes_out),
            bytes(p.bytes_in),
            bytes(p.queued_bytes),
            p.reconnects.to_string(),
            p.last_close_reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    if status.peers.is_empty() {
        out += "(no peers)\n";
    }
    out
}

fn duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_sizes_and_durations() {
        assert_eq!(status_url("127.0.0.1:9090"), "http://127.0.0.1:9090/status");
        assert_eq!(status_url("http://host:1/"), "http://host:1/status");
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(duration(59.9), "59s");
        assert_eq!(duration(61.0), "1m01s");
        assert_eq!(duration(7260.0), "2h01m");
    }
}
