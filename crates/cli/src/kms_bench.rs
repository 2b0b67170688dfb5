//! `veil kms bench` (hidden): resolutions per second per core against the
//! raw constant-time modexp rate on the same machine (BLIND.md §10), and,
//! with a broker, the rate of uncached `BlindResolve` round trips.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use openssl::bn::{BigNum, BigNumContext};
use veil_blind::protocol::{error_code, ResolveRequest, ShareRegisterRequest};
use veil_blind::{Kid, MasterKey, ModulusBits};

use crate::secure::ConnectArgs;

#[derive(clap::Args)]
pub struct Args {
    /// A KAT JSON (shared/blind/kat-*.json): its p, q, e give a real key
    /// without a minutes-long prime search.
    #[arg(long)]
    kat: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Also measure BlindResolve round trips against the broker: registers
    /// a share of the KAT key for PRINCIPAL (the principal these connection
    /// flags log in as; needs ALTER on CLUSTER), then resolves precomputed
    /// tokens of distinct names, so the broker's cache never hits.
    #[arg(long)]
    wire_principal: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Calls `f` until `secs` pass; returns operations per second.
fn rate(secs: f64, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while start.elapsed() < budget {
        f()?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn hex(s: &str) -> anyhow::Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("bad hex in the KAT"))
        .collect()
}

/// The value of `"key": "…"` in the KAT's flat JSON.
fn field(json: &str, key: &str) -> anyhow::Result<String> {
    let pat = format!("\"{key}\"");
    let at = json
        .find(&pat)
        .with_context(|| format!("KAT has no {key}"))?;
    let rest = &json[at + pat.len()..];
    let start = rest.find('"').context("KAT value")? + 1;
    let len = rest[start..].find('"').context("KAT value")?;
    Ok(rest[start..start + len].to_owned())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let json = std::fs::read_to_string(&args.kat)
        .with_context(|| format!("cannot read {}", args.kat.display()))?;
    let p = hex(&field(&json, "p")?)?;
    let q = hex(&field(&json, "q")?)?;
    let e = hex(&field(&json, "e")?)?;
    let bits = ModulusBits::from_bits((p.len() * 16) as u32)?;
    let master = MasterKey::from_components(Kid::new("bench")?, "bench", bits, &p, &q, &e)?;
    let (user, share) = master.split()?;

    // The baseline: one full-size constant-time modexp, nothing else.
    let n = BigNum::from_slice(&master.modulus()?)?;
    let mut exp = BigNum::new()?;
    exp.rand(bits.bits() as i32 - 1, openssl::bn::MsbOption::ONE, true)?;
    exp.set_const_time();
    let mut base = BigNum::new()?;
    n.rand_range(&mut base)?;
    let mut ctx = BigNumContext::new()?;
    let mut out = BigNum::new()?;
    let raw = rate(args.seconds, || {
        out.mod_exp(&base, &exp, &n, &mut ctx)?;
        Ok(())
    })?;
    let mut i = 0u64;
    let token = rate(args.seconds, || {
        i += 1;
        user.token(&format!("bench/topic-{i}"))?;
        Ok(())
    })?;
    let c = user.token("bench/topic")?;
    let resolve = rate(args.seconds, || {
        share.resolve(c.as_bytes())?;
        Ok(())
    })?;
    println!("bits={} one core:", bits.bits());
    println!("  raw modexp (openssl, const-time)  {raw:8.1}/s");
    println!(
        "  client token  (FDH + modexp)      {token:8.1}/s  ({:.0}% of raw)",
        100.0 * token / raw
    );
    println!(
        "  broker resolve (check + modexp + name) {resolve:8.1}/s  ({:.0}% of raw)",
        100.0 * resolve / raw
    );
    if let Some(principal) = &args.wire_principal {
        let tokens: Vec<_> = (0..((raw * args.seconds) as usize).max(50))
            .map(|i| user.token(&format!("bench/unknown-{i}")))
            .collect::<Result<_, _>>()?;
        let rt = tokio::runtime::Handle::current();
        let mut conn = tokio::task::block_in_place(|| rt.block_on(args.connect.connect("bench")))?;
        let register = ShareRegisterRequest::new(principal, &share)?;
        let resp = tokio::task::block_in_place(|| {
            rt.block_on(veil_client::blind::veil_call(&mut conn, &register))
        })?;
        anyhow::ensure!(
            resp.error_code == error_code::NONE,
            "BlindShareRegister failed with code {}",
            resp.error_code
        );
        let start = Instant::now();
        for t in &tokens {
            let req = ResolveRequest {
                kid: user.kid().as_bytes().to_vec(),
                token: t.as_bytes().to_vec(),
                key_principal: None,
            };
            let resp = tokio::task::block_in_place(|| {
                rt.block_on(veil_client::blind::veil_call(&mut conn, &req))
            })?;
            anyhow::ensure!(
                resp.error_code == error_code::UNKNOWN_TOPIC_OR_PARTITION
                    || resp.error_code == error_code::NONE,
                "BlindResolve failed with code {}",
                resp.error_code
            );
        }
        let wire = tokens.len() as f64 / start.elapsed().as_secs_f64();
        println!(
            "  BlindResolve round trips (uncached, 1 connection) {wire:8.1}/s  ({:.0}% of raw)",
            100.0 * wire / raw
        );
    }
    Ok(())
}
