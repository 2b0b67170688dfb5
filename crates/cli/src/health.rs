//! `veil health`: asks a broker's admin endpoint whether it is ready
//! (`/healthz`) and exits 0 only if it is. Container images have no curl;
//! this is their health check.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct Args {
    /// The admin endpoint (host:port).
    #[arg(long, env = "VEIL_HEALTH_ADDRESS", default_value = "127.0.0.1:9644")]
    address: String,
    /// The path to ask: /healthz (ready) or /livez (alive).
    #[arg(long, default_value = "/healthz")]
    path: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let addr = args
        .address
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", args.address))?
        .next()
        .with_context(|| format!("{} has no address", args.address))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.path, args.address
    )?;
    let mut reply = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut reply)
        .context("no answer")?;
    let reply = String::from_utf8_lossy(&reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .context("not an HTTP answer")?;
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    if status != "200" {
        bail!("{} answered {status}: {body}", args.path);
    }
    println!("{body}");
    Ok(())
}
