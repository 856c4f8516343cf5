//! `xcnf-bench`: the benchmark `cargo xtask bench` builds and runs (as root).
//!
//! It prints one markdown report to stdout and writes it to `--out`. Targets
//! are reported as PASS/MISS and never change the exit status; a measurement
//! that could not be made does (after the report is written).

use std::{io::Write as _, os::fd::AsRawFd as _, path::PathBuf, process::ExitCode, time::Duration};

use xcnf_tests::bench::{self, BenchError, control, e2e, prog};

const USAGE: &str = "\
usage: xcnf-bench [options]

  --only prog|e2e|control  run one part only (default: all three)
  --sessions N,N         session table sizes for test-run (default 1000,1000000)
  --calls N              test-run calls per measurement (default 4000)
  --repeat N             repetitions per call, at most 250 (default 200)
  --new-flows N          first packets measured per hook and size (default 10000, max 16384)
  --spread N             sessions in the cycle of the different-session case, and its packets (default 200000)
  --prog-rounds N        test-run rounds, table sizes alternating (default 3)
  --rounds N             end-to-end rounds, modes interleaved (default 5)
  --seconds S            measured seconds per end-to-end run (default 5)
  --warmup S             traffic before each measurement (default 1)
  --flows N              UDP flows trafgen cycles through (default 59000)
  --modes a,b            end-to-end modes (default all: drop,kernel,nft,xcnf-tc,xcnf-tc-nat,xcnf-xdp-nat)
  --mappings N           static mappings in the control-plane config (default 10000)
  --starts N             cold and warm agent starts each (default 5)
  --applies N            gRPC applies per mode (default 20)
  --idle S               agent idle time before memory is read (default 3)
  --out PATH             where the report goes (default target/bench/latest.md)
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    All,
    Prog,
    E2e,
    Control,
}

struct Args {
    part: Part,
    prog: prog::Options,
    e2e: e2e::Options,
    control: control::Options,
    out: PathBuf,
}

impl Args {
    fn runs(&self, part: Part) -> bool {
        self.part == Part::All || self.part == part
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

/// A number within `range`, or an error naming the flag and the range.
fn parse_in(flag: &str, v: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32, String> {
    let n: u32 = parse_num(flag, v)?;
    if !range.contains(&n) {
        return Err(format!(
            "{flag}: {v} is not between {} and {}",
            range.start(),
            range.end()
        ));
    }
    Ok(n)
}

fn parse_seconds(flag: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = parse_num(flag, v)?;
    if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
        return Err(format!("{flag}: {v} is not between 0 and 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        part: Part::All,
        prog: prog::Options::default(),
        e2e: e2e::Options {
            rounds: 5,
            seconds: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            flows: 59_000,
            modes: e2e::Mode::ALL.to_vec(),
        },
        control: control::Options::default(),
        out: xcnf_tests::workspace_root().join("target/bench/latest.md"),
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        match flag.as_str() {
            "--only" => {
                a.part = match v {
                    "prog" => Part::Prog,
                    "e2e" => Part::E2e,
                    "control" => Part::Control,
                    _ => return Err(format!("--only: {v:?} is not prog, e2e or control")),
                }
            }
            "--sessions" => {
                a.prog.sizes = v
                    .split(',')
                    .map(|n| parse_in(flag, n.trim(), 4..=4_000_000))
                    .collect::<Result<_, _>>()?;
            }
            "--calls" => a.prog.calls = parse_in(flag, v, 1..=1_000_000)?,
            // Frames start with TTL 255 and every repetition forwards.
            "--repeat" => a.prog.repeat = parse_in(flag, v, 1..=250)?,
            "--new-flows" => a.prog.new_flows = parse_in(flag, v, 1..=prog::MAX_NEW_FLOWS)?,
            "--spread" => a.prog.spread = parse_in(flag, v, 1..=4_000_000)?,
            "--prog-rounds" => a.prog.rounds = parse_in(flag, v, 1..=100)?,
            "--rounds" => a.e2e.rounds = parse_in(flag, v, 1..=100)?,
            "--seconds" => a.e2e.seconds = parse_seconds(flag, v)?,
            "--warmup" => a.e2e.warmup = parse_seconds(flag, v)?,
            // One pool address's ports bound the flows.
            "--flows" => a.e2e.flows = parse_in(flag, v, 1..=e2e::MAX_FLOWS)?,
            "--modes" => {
                a.e2e.modes = v
                    .split(',')
                    .map(|m| {
                        e2e::Mode::from_id(m.trim())
                            .ok_or_else(|| format!("--modes: unknown mode {m:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--mappings" => a.control.mappings = parse_in(flag, v, 1..=control::MAX_MAPPINGS)?,
            "--starts" => a.control.starts = parse_in(flag, v, 1..=100)?,
            "--applies" => a.control.applies = parse_in(flag, v, 1..=10_000)?,
            "--idle" => a.control.idle = parse_seconds(flag, v)?,
            "--out" => a.out = PathBuf::from(v),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

/// Holds an exclusive lock for the process's lifetime: two benchmarks would
/// share the cores (and the fixed namespace names) and measure each other.
fn lock() -> Result<std::fs::File, String> {
    let path = "/run/xcnf-bench.lock";
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!("another xcnf-bench holds {path}"));
    }
    Ok(f)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("xcnf-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xcnf-bench: needs root (network namespaces, eBPF)");
        return ExitCode::FAILURE;
    }
    let _lock = match lock() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("xcnf-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    bench::catch_interrupts();

    let mut doc = format!(
        "## Benchmark\n\n`cargo xtask bench` on {}.\n\n",
        bench::machine()
    );
    let mut failed = false;
    if args.runs(Part::Prog) {
        match prog::run(&args.prog) {
            Ok(r) => {
                failed |= r.any_failed();
                doc.push_str(&r.markdown());
                doc.push('\n');
            }
            Err(e) => return stopped(&e),
        }
    }
    if args.runs(Part::E2e) {
        match e2e::run(&args.e2e) {
            Ok(r) => {
                failed |= r.any_failed();
                doc.push_str(&r.markdown());
                doc.push('\n');
            }
            Err(e) => return stopped(&e),
        }
    }
    if args.runs(Part::Control) {
        match control::run(&args.control) {
            Ok(r) => doc.push_str(&r.markdown()),
            // Reported, like a failed e2e mode, so the other parts' numbers
            // are not lost.
            Err(BenchError::Failed(why)) => {
                failed = true;
                doc.push_str(&format!("### Control plane\n\nNot measured: {why}\n"));
            }
            Err(e) => return stopped(&e),
        }
    }

    print!("\n{doc}");
    let _ = std::io::stdout().flush();
    if let Some(dir) = args.out.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("xcnf-bench: creating {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::write(&args.out, &doc) {
        eprintln!("xcnf-bench: writing {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    eprintln!("xcnf-bench: report written to {}", args.out.display());
    if failed {
        eprintln!("xcnf-bench: some measurements failed (see the report)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn stopped(e: &BenchError) -> ExitCode {
    eprintln!("xcnf-bench: {e}; cleaned up, no report written");
    ExitCode::FAILURE
}
