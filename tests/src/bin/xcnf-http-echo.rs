//! A minimal real HTTP/1.1 server for the demo and tests: it answers every
//! request with the client address it saw, which is what shows whether a hop
//! translated the source.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    process::ExitCode,
};

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    // A connect-and-close (a readiness probe) sends no request: nothing to answer.
    if reader.read_line(&mut line)? == 0 {
        return Ok(());
    }
    // Read the rest of the request head; the body (none for GET) is ignored.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let body = format!("{}\n", peer.ip());
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:8080".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("xcnf-http-echo: bind {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("xcnf-http-echo: listening on {addr}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                eprintln!("xcnf-http-echo: {e}");
            }
        });
    }
    ExitCode::SUCCESS
}
