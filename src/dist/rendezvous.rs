//! Start-up hand-off: rank 0 listens on `MASTER_PORT` and gives every other rank a small
//! payload (the NCCL unique id), as torch's TCP store does. Only these few bytes travel over TCP;
//! everything else goes through NCCL. Each peer first sends a hello with its rank and world size,
//! so a mis-launched rank is named; a rank that never arrives ends the wait with an error that
//! says which ranks are missing.

use crate::util::env::Launch;
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"trm-rdv1";

/// Rank 0 passes `payload` (Some); every rank returns it.
pub fn exchange(l: &Launch, payload: Option<&[u8]>, timeout: Duration) -> Result<Vec<u8>> {
    if l.world == 1 {
        return payload.map(|p| p.to_vec()).context("rank 0 has no payload");
    }
    if l.rank == 0 {
        serve(l, payload.context("rank 0 has no payload")?, timeout)?;
        Ok(payload.unwrap().to_vec())
    } else {
        fetch(l, timeout)
    }
}

fn serve(l: &Launch, payload: &[u8], timeout: Duration) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", l.master_port))
        .with_context(|| format!("rank 0 cannot listen on port {} (MASTER_PORT): is another run using it?", l.master_port))?;
    listener.set_nonblocking(true)?;
    let t0 = Instant::now();
    let mut arrived = vec![false; l.world];
    arrived[0] = true;
    while arrived.iter().any(|a| !a) {
        match listener.accept() {
            Ok((mut s, peer)) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut hello = [0u8; 24];
                if let Err(e) = s.read_exact(&mut hello) {
                    // A port scan or a health check, not a rank: keep waiting for the ranks.
                    eprintln!("warning: rendezvous: ignored a connection from {peer} that sent no hello ({e})");
                    continue;
                }
                if &hello[..8] != MAGIC {
                    eprintln!("warning: rendezvous: ignored a connection from {peer} that is not a trm rank");
                    continue;
                }
                let rank = u64::from_le_bytes(hello[8..16].try_into()?) as usize;
                let world = u64::from_le_bytes(hello[16..24].try_into()?) as usize;
                if world != l.world || rank == 0 || rank >= l.world {
                    bail!("rendezvous: {peer} says it is rank {rank} of {world}, but rank 0 runs a world of {}", l.world);
                }
                if arrived[rank] {
                    bail!("rendezvous: rank {rank} arrived twice (from {peer}): two processes were given the same RANK");
                }
                s.write_all(&(payload.len() as u64).to_le_bytes())?;
                s.write_all(payload)?;
                arrived[rank] = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if t0.elapsed() > timeout {
                    let missing: Vec<String> = (0..l.world).filter(|&r| !arrived[r]).map(|r| r.to_string()).collect();
                    bail!(
                        "rendezvous: ranks {} did not arrive at port {} within {:.0} s (TRM_RENDEZVOUS_TIMEOUT); check that every rank was started with the same MASTER_ADDR/MASTER_PORT and WORLD_SIZE={}",
                        missing.join(", "),
                        l.master_port,
                        timeout.as_secs_f64(),
                        l.world
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("rendezvous: accept failed"),
        }
    }
    Ok(())
}

fn fetch(l: &Launch, timeout: Duration) -> Result<Vec<u8>> {
    let t0 = Instant::now();
    let target = format!("{}:{}", l.master_addr, l.master_port);
    let mut last_err = String::new();
    loop {
        let addrs: Vec<_> = match target.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                last_err = format!("cannot resolve {target}: {e}");
                vec![]
            }
        };
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(timeout.saturating_sub(t0.elapsed()).max(Duration::from_secs(1))))?;
                    let mut hello = Vec::with_capacity(24);
                    hello.extend_from_slice(MAGIC);
                    hello.extend_from_slice(&(l.rank as u64).to_le_bytes());
                    hello.extend_from_slice(&(l.world as u64).to_le_bytes());
                    s.write_all(&hello)?;
                    let mut n = [0u8; 8];
                    s.read_exact(&mut n)
                        .with_context(|| format!("rendezvous: rank 0 at {target} closed the connection (see its error)"))?;
                    let n = u64::from_le_bytes(n) as usize;
                    anyhow::ensure!(n <= 1 << 20, "rendezvous: {target} sent a payload of {n} bytes: not a trm rank 0");
                    let mut p = vec![0u8; n];
                    s.read_exact(&mut p)?;
                    return Ok(p);
                }
                Err(e) => last_err = format!("{a}: {e}"),
            }
        }
        if t0.elapsed() > timeout {
            bail!(
                "rank {}: cannot reach rank 0 at {target} within {:.0} s (TRM_RENDEZVOUS_TIMEOUT; last error: {last_err}); is rank 0 running, and are MASTER_ADDR/MASTER_PORT right?",
                l.rank,
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(rank: usize, world: usize, port: u16) -> Launch {
        Launch { rank, world, local_rank: rank, master_addr: "127.0.0.1".into(), master_port: port, source: "torchrun" }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn every_rank_gets_rank_zeros_payload() {
        let port = free_port();
        let id: Vec<u8> = (0..128).map(|i| i as u8).collect();
        let got: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|r| {
                    let id = id.clone();
                    s.spawn(move || exchange(&launch(r, 3, port), (r == 0).then_some(&id[..]), Duration::from_secs(20)).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(got.iter().all(|g| g == &id));
    }

    #[test]
    fn a_missing_rank_is_a_clear_error_not_a_hang() {
        let port = free_port();
        let e = format!("{:#}", exchange(&launch(0, 3, port), Some(b"id"), Duration::from_millis(300)).unwrap_err());
        assert!(e.contains("ranks 1, 2 did not arrive"), "{e}");
        let e = format!("{:#}", exchange(&launch(1, 2, free_port()), None, Duration::from_millis(300)).unwrap_err());
        assert!(e.contains("cannot reach rank 0"), "{e}");
    }
}
