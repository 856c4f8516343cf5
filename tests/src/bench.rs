//! `cargo xtask bench`: what the datapath costs per packet, measured two ways.
//!
//! - [`prog`] runs the loaded programs through `BPF_PROG_TEST_RUN` against
//!   session tables of different sizes: the cost of the program alone.
//! - [`e2e`] sends trafgen traffic through a cnf namespace and compares xcnf
//!   with the kernel's own forwarding and nftables masquerade.
//!
//! [`control`] measures the agent rather than the packets: start-up time,
//! memory and the latency of a config change with a large NAT44 config.
//!
//! This is not a test: nothing here asserts on timing. Targets are printed
//! next to the numbers as PASS or MISS and never fail the command; what fails
//! it is a measurement that could not be made or that took the wrong path
//! (a "NAT" run the datapath did not translate measures nothing).

pub mod control;
pub mod e2e;
pub mod floor;
pub mod prog;
pub mod report;

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// Why a measurement has no number.
#[derive(Debug)]
pub enum BenchError {
    /// Ctrl-C or SIGTERM: stop, clean up, report nothing further.
    Interrupted,
    /// The measurement could not be made or took the wrong path.
    Failed(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Interrupted => f.write_str("interrupted"),
            BenchError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for BenchError {}

/// Shorthand for a [`BenchError::Failed`].
pub fn failed(why: impl Into<String>) -> BenchError {
    BenchError::Failed(why.into())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag the benchmark polls, so it stops at
/// the next step and its Drop guards remove namespaces, pins and processes
/// instead of the process dying with them in place.
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn check_interrupt() -> Result<(), BenchError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps `d`, waking early (with an error) on Ctrl-C.
pub fn sleep(d: Duration) -> Result<(), BenchError> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Runs `f`, turning a panic into an error.
///
/// The harness this builds on (namespaces, agent, test-run loading) panics
/// on any failed step, and its Drop guards undo what was created while the
/// panic unwinds, so by the time this returns nothing of `f` is left.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, BenchError>) -> Result<T, BenchError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        // A step that failed because Ctrl-C killed a child is an interrupt.
        Err(_) if INTERRUPTED.load(Ordering::SeqCst) => Err(BenchError::Interrupted),
        Err(panic) => Err(BenchError::Failed(summary(&panic_message(panic.as_ref())))),
    }
}

/// The gist of a failure for the report: its first line, and the first
/// line that says "error" (an agent's log, a verifier log), shortened. The
/// whole message has already gone to stderr through the panic hook.
fn summary(msg: &str) -> String {
    let cut = |l: &str| -> String {
        let l = l.trim();
        match l.char_indices().nth(240) {
            Some((i, _)) => format!("{}…", &l[..i]),
            None => l.to_owned(),
        }
    };
    let mut lines = msg.lines();
    let first = cut(lines.next().unwrap_or(""));
    match lines.find(|l| l.contains("error")) {
        Some(e) => format!("{first}: {}", cut(e)),
        None => first,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked".to_owned()
    }
}

/// Prints a progress line to stderr, stamped with the seconds since the
/// benchmark started, so a slow step shows itself.
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {
        $crate::bench::progress_line(&format!($($arg)*))
    };
}

pub fn progress_line(msg: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("bench [{t:6.1}s] {msg}");
}

/// Pins the calling thread (and the processes it starts afterwards) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<(), BenchError> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays in bounds
    // for any cpu below CPU_SETSIZE, which the kernel checks again.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(failed(format!(
            "pinning to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `uname -r` and the CPU model, for the report's header.
pub fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    // Other work on the machine shows in every number (and on a 2-vCPU VM
    // whose vCPUs are SMT siblings, a busy sibling slows the measured one),
    // so the report says how busy the machine was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "kernel {kernel}, {} × {model}, 1-minute load average {load} at the start",
        online_cpus()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_keeps_first_and_error_lines() {
        let long = "x".repeat(300);
        let s = super::summary(&format!(
            "agent exited\nlog\nxcnf-agent: error: {long}\nmore"
        ));
        assert!(s.starts_with("agent exited: xcnf-agent: error: xxx"), "{s}");
        assert!(s.ends_with('…') && s.chars().count() < 300, "{s}");
        assert_eq!(super::summary("one line"), "one line");
    }
}
