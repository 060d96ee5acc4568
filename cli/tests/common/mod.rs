//! What the CLI's process tests share: a child process (a `reign node`, or
//! a shell that execs one) whose stderr goes to a log file, read back and
//! waited on, signalled, measured from `/proc`, and killed and reaped when
//! dropped, so that no test leaves a process behind whatever happens.
//!
//! Each test binary adds its own constructors (`impl Proc { fn spawn… }`)
//! for the arguments it needs; what every one of them did alike is here.

// Every test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reign_proto::ClusterSpec;

/// How long a wait for a log line or an exit may take before the test
/// fails: generous, so that a slow or shared machine never fails a test.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(10);

/// A child process with its stderr in a log file, killed when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// The file its stderr goes to.
    pub log: PathBuf,
}

/// `reign node` with `args`, logging at INFO unless the caller sets
/// `RUST_LOG` on the command.
pub fn reign_node(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reign"));
    command.arg("node").args(args).env("RUST_LOG", "info");
    command
}

/// Writes node `id`'s spec as `spec_<id>.json` in `dir`; its path.
pub fn write_spec(dir: &Path, spec: &ClusterSpec, id: u16) -> PathBuf {
    let path = dir.join(format!("spec_{id}.json"));
    std::fs::write(&path, spec.to_json()).unwrap();
    path
}

/// `path`, or `path` with `.1.log`, `.2.log`… when it exists already (a
/// node started again keeps its earlier log).
pub fn unique(path: PathBuf) -> PathBuf {
    let mut candidate = path.clone();
    let mut n = 0;
    while candidate.exists() {
        n += 1;
        candidate = path.with_extension(format!("{n}.log"));
    }
    candidate
}

impl Proc {
    /// Starts `command` with stdin and stdout closed and stderr in `log`.
    pub fn start(mut command: Command, log: PathBuf) -> Proc {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("spawn the child process");
        Proc { child, log }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `text` appears in the log.
    pub fn wait_for_log(&self, text: &str) {
        self.wait_for_log_times(text, 1);
    }

    /// Waits until `text` appears in the log `times` times.
    pub fn wait_for_log_times(&self, text: &str, times: usize) {
        let deadline = Instant::now() + WAIT;
        while self.log().matches(text).count() < times {
            assert!(
                Instant::now() < deadline,
                "never logged {text:?} {times} times: {}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Sends `signal` (a name such as `TERM` or `HUP`).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process ends within `timeout`.
    pub fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// CPU time (user + system) the process has used so far, from /proc.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which ends with ')').
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // Linux reports in USER_HZ, 100 on every mainstream configuration.
        Some(Duration::from_millis(ticks * 10))
    }

    /// The process's resident memory, in KiB (0 once it is gone).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
