//! A UDP echo for the NAT tests, the datagram counterpart of xcnf-http-echo.
//!
//! `serve IP:PORT` answers every datagram with the source address it saw, so
//! a test learns the external endpoint a NAT gave a flow. `ask LOCAL_IP
//! PORTS TO TIMEOUT_MS` opens one flow per local port (`P` or `P1-P2`), each
//! from its own socket, and prints `PORT SEEN` or `PORT timeout` per flow.
//! Fixed local ports make a flow repeatable across invocations: asking again
//! from the same port is the same inside endpoint, so it must find the same
//! NAT binding.

use std::{
    net::{SocketAddr, UdpSocket},
    process::ExitCode,
    time::{Duration, Instant},
};

fn serve(bind: &str) -> Result<(), String> {
    let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    eprintln!("xcnf-udp-echo: listening on {bind}");
    let mut buf = [0u8; 2048];
    loop {
        let (_, peer) = sock
            .recv_from(&mut buf)
            .map_err(|e| format!("recv on {bind}: {e}"))?;
        if let Err(e) = sock.send_to(peer.to_string().as_bytes(), peer) {
            eprintln!("xcnf-udp-echo: reply to {peer}: {e}");
        }
    }
}

/// Parses `P` or `P1-P2`.
fn ports(spec: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("bad port range {spec:?}: want P or P1-P2");
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// One flow: up to three sends within `timeout`, in case the first datagram
/// races a neighbour resolution somewhere on the path.
fn ask_one(local: SocketAddr, to: SocketAddr, timeout: Duration) -> Result<Option<String>, String> {
    let sock = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        sock.send_to(b"xcnf", to)
            .map_err(|e| format!("send {local} -> {to}: {e}"))?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some((timeout / 3).min(left)))
            .map_err(|e| format!("timeout: {e}"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == to => {
                return Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
            // An answer from elsewhere is not the echo: keep waiting.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // The socket is unconnected, so ICMP errors are not reported
            // here: anything else is a real error.
            Err(e) => return Err(format!("recv on {local}: {e}")),
        }
    }
    Ok(None)
}

fn ask(args: &[String]) -> Result<bool, String> {
    let [local_ip, range, to, ms] = args else {
        return Err("usage: xcnf-udp-echo ask LOCAL_IP P[-P2] TO_IP:PORT TIMEOUT_MS".into());
    };
    let to: SocketAddr = to.parse().map_err(|e| format!("bad address {to:?}: {e}"))?;
    let ms: u64 = ms.parse().map_err(|e| format!("bad timeout {ms:?}: {e}"))?;
    let mut all = true;
    for port in ports(range)? {
        let local: SocketAddr = format!("{local_ip}:{port}")
            .parse()
            .map_err(|e| format!("bad local address {local_ip:?}: {e}"))?;
        match ask_one(local, to, Duration::from_millis(ms))? {
            Some(seen) => println!("{port} {seen}"),
            None => {
                all = false;
                println!("{port} timeout");
            }
        }
    }
    Ok(all)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") if args.len() == 2 => serve(&args[1]).map(|()| true),
        Some("ask") => ask(&args[1..]),
        _ => Err(
            "usage: xcnf-udp-echo serve IP:PORT | ask LOCAL_IP P[-P2] TO_IP:PORT TIMEOUT_MS".into(),
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xcnf-udp-echo: {e}");
            ExitCode::from(2)
        }
    }
}
