//! Start-up hand-off: rank 0 listens on `MASTER_ADDR:MASTER_PORT` and gives every other rank a
//! small payload (the NCCL unique id), as torch's TCP store does. Only these few bytes travel
//! over TCP; everything else goes through NCCL.
//!
//! The exchange, per connection: rank 0 sends a random challenge; the peer answers with its rank,
//! its world size and a proof that it holds the launch's token (SHA-256 of token, challenge, rank
//! and world); rank 0 answers with the payload and its own proof, which the peer checks. A hello
//! that is wrong (no proof, another world size, a rank out of range or already served) is refused
//! with its reason, logged, and the wait goes on: one stray or mis-launched process cannot abort a
//! launch. Connections are served concurrently, each with short timeouts, so a slow or silent
//! client holds nothing; the overall wait ends at `TRM_RENDEZVOUS_TIMEOUT` with the missing ranks
//! named.

use crate::util::env::Launch;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"trm-rdv2";
/// The longest a peer may take over one message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest payload a peer accepts (an NCCL id is 128 bytes).
const MAX_PAYLOAD: usize = 1 << 16;

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

fn proof(token: &str, challenge: &[u8], who: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [MAGIC.as_slice(), token.as_bytes(), challenge, who.as_bytes(), body] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn hello_body(rank: usize, world: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(rank as u64).to_le_bytes());
    b[8..].copy_from_slice(&(world as u64).to_le_bytes());
    b
}

/// The address rank 0 binds: MASTER_ADDR's own (never every interface).
fn bind_address(l: &Launch) -> Result<std::net::SocketAddr> {
    let target = format!("{}:{}", l.master_addr, l.master_port);
    target
        .to_socket_addrs()
        .with_context(|| format!("rank 0 cannot resolve MASTER_ADDR {}", l.master_addr))?
        .next()
        .with_context(|| format!("MASTER_ADDR {} has no address", l.master_addr))
}

fn serve(l: &Launch, payload: &[u8], timeout: Duration) -> Result<()> {
    let addr = bind_address(l)?;
    let listener = TcpListener::bind(addr).with_context(|| {
        format!(
            "rank 0 cannot listen on {addr} (MASTER_ADDR:MASTER_PORT): is another run using the port, or is MASTER_ADDR not this machine?"
        )
    })?;
    listener.set_nonblocking(true)?;
    let t0 = Instant::now();
    let arrived = Arc::new(Mutex::new({
        let mut a = vec![false; l.world];
        a[0] = true;
        a
    }));
    let (world, token, payload) = (l.world, Arc::new(l.token.clone()), Arc::new(payload.to_vec()));
    loop {
        if arrived.lock().unwrap().iter().all(|&a| a) {
            return Ok(());
        }
        match listener.accept() {
            Ok((s, peer)) => {
                let (arrived, token, payload) = (arrived.clone(), token.clone(), payload.clone());
                std::thread::spawn(move || {
                    if let Err(e) = greet(s, world, &token, &payload, &arrived) {
                        eprintln!("warning: rendezvous: ignored a connection from {peer}: {e:#}");
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stopped_while_waiting(0)?;
                if t0.elapsed() > timeout {
                    let missing: Vec<String> =
                        arrived.lock().unwrap().iter().enumerate().filter(|(_, a)| !**a).map(|(r, _)| r.to_string()).collect();
                    bail!(
                        "rendezvous: ranks {} did not arrive at {addr} within {:.0} s (TRM_RENDEZVOUS_TIMEOUT); check that every rank was started with the same MASTER_ADDR/MASTER_PORT, WORLD_SIZE={world} and TRM_RENDEZVOUS_TOKEN",
                        missing.join(", "),
                        timeout.as_secs_f64(),
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("rendezvous: accept failed"),
        }
    }
}

/// One connection, on its own thread: challenge, hello, then the payload or a refusal.
fn greet(mut s: TcpStream, world: usize, token: &str, payload: &[u8], arrived: &Mutex<Vec<bool>>) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(MESSAGE_TIMEOUT))?;
    s.set_write_timeout(Some(MESSAGE_TIMEOUT))?;
    let challenge: [u8; 16] = rand::random();
    s.write_all(MAGIC)?;
    s.write_all(&challenge)?;
    let mut hello = [0u8; 8 + 16 + 32];
    s.read_exact(&mut hello).context("no hello (a port scan, a health check or a slow client)")?;
    anyhow::ensure!(&hello[..8] == MAGIC, "not a trm rank of this version");
    let body: [u8; 16] = hello[8..24].try_into()?;
    let rank = u64::from_le_bytes(body[..8].try_into()?) as usize;
    let peer_world = u64::from_le_bytes(body[8..].try_into()?) as usize;
    let refuse = |mut s: TcpStream, why: String| -> Result<()> {
        let text = why.as_bytes();
        s.write_all(&[1])?;
        s.write_all(&(text.len() as u16).to_le_bytes())?;
        s.write_all(text)?;
        bail!("{why}")
    };
    if hello[24..] != proof(token, &challenge, "rank", &body) {
        return refuse(s, "its hello does not prove the launch's token (TRM_RENDEZVOUS_TOKEN differs: another launch?)".into());
    }
    if peer_world != world || rank == 0 || rank >= world {
        return refuse(s, format!("it says it is rank {rank} of {peer_world}, but rank 0 runs a world of {world}"));
    }
    {
        let mut a = arrived.lock().unwrap();
        if a[rank] {
            drop(a);
            return refuse(s, format!("rank {rank} has already arrived: two processes were given RANK={rank}"));
        }
        a[rank] = true;
    }
    let sent = (|| -> Result<()> {
        s.write_all(&[0])?;
        s.write_all(&(payload.len() as u64).to_le_bytes())?;
        s.write_all(payload)?;
        s.write_all(&proof(token, &challenge, "rank0", payload))?;
        Ok(())
    })();
    if sent.is_err() {
        arrived.lock().unwrap()[rank] = false; // it may come again
    }
    sent.with_context(|| format!("rank {rank} left before it got the id"))
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
                Ok(s) => match ask(s, l) {
                    Ok(p) => return Ok(p),
                    Err(Refused(why)) => bail!("rank {}: rank 0 at {target} refused this rank: {why}", l.rank),
                    Err(Broken(e)) => last_err = format!("{a}: {e:#}"),
                },
                Err(e) => last_err = format!("{a}: {e}"),
            }
        }
        stopped_while_waiting(l.rank)?;
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

/// A stop (Ctrl-C, or a launcher passing one on) during the rendezvous ends the wait: nothing
/// was trained yet, so there is nothing to save. An error, not an interrupt: no checkpoint was
/// written, so there is nothing to resume.
fn stopped_while_waiting(rank: usize) -> Result<()> {
    anyhow::ensure!(
        !crate::util::interrupt::requested(),
        "rank {rank}: stopped while the ranks were meeting, before any step (nothing was written to resume)"
    );
    Ok(())
}

enum AskError {
    /// Rank 0 read the hello and said no: retrying cannot help.
    Refused(String),
    /// The connection failed (rank 0 not ready, or not rank 0): try again.
    Broken(anyhow::Error),
}
use AskError::{Broken, Refused};

fn ask(mut s: TcpStream, l: &Launch) -> std::result::Result<Vec<u8>, AskError> {
    let io = |e: std::io::Error| Broken(e.into());
    s.set_read_timeout(Some(MESSAGE_TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(MESSAGE_TIMEOUT)).map_err(io)?;
    let mut head = [0u8; 8 + 16];
    s.read_exact(&mut head).map_err(io)?;
    if &head[..8] != MAGIC {
        return Err(Broken(anyhow::anyhow!("the listener is not a trm rank 0 of this version")));
    }
    let challenge = &head[8..];
    let body = hello_body(l.rank, l.world);
    let mut hello = Vec::with_capacity(56);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&body);
    hello.extend_from_slice(&proof(&l.token, challenge, "rank", &body));
    s.write_all(&hello).map_err(io)?;
    let mut status = [0u8; 1];
    s.read_exact(&mut status).map_err(io)?;
    if status[0] == 1 {
        let mut n = [0u8; 2];
        s.read_exact(&mut n).map_err(io)?;
        let mut why = vec![0u8; u16::from_le_bytes(n) as usize];
        s.read_exact(&mut why).map_err(io)?;
        return Err(Refused(String::from_utf8_lossy(&why).into_owned()));
    }
    let mut n = [0u8; 8];
    s.read_exact(&mut n).map_err(io)?;
    let n = u64::from_le_bytes(n) as usize;
    if status[0] != 0 || n > MAX_PAYLOAD {
        return Err(Broken(anyhow::anyhow!("an answer of {n} bytes: not a trm rank 0")));
    }
    let mut p = vec![0u8; n + 32];
    s.read_exact(&mut p).map_err(io)?;
    let (payload, their_proof) = p.split_at(n);
    if their_proof != proof(&l.token, challenge, "rank0", payload) {
        return Err(Refused(
            "its answer does not prove the launch's token: not this launch's rank 0 (TRM_RENDEZVOUS_TOKEN differs)".into(),
        ));
    }
    p.truncate(n);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(rank: usize, world: usize, port: u16) -> Launch {
        Launch {
            rank,
            world,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            source: "torchrun",
            token: "t0k".into(),
        }
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

    fn connect(port: u16) -> TcpStream {
        let t0 = Instant::now();
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => return s,
                Err(_) if t0.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn refusal(l: Launch) -> String {
        match ask(connect(l.master_port), &l) {
            Err(Refused(why)) => why,
            Ok(_) => panic!("rank {} of {} with token {} was let in", l.rank, l.world, l.token),
            Err(Broken(e)) => panic!("{e:#}"),
        }
    }

    /// Fake ranks on 127.0.0.1: a silent client, a wrong token, a wrong world size and a second
    /// rank 1 are refused (each with its reason) while the right ranks still meet.
    #[test]
    fn strangers_are_refused_and_the_right_ranks_still_meet() {
        let port = free_port();
        let t0 = Instant::now();
        let server = std::thread::spawn(move || exchange(&launch(0, 3, port), Some(b"nccl-id"), Duration::from_secs(30)));
        let _silent = connect(port); // holds a connection and says nothing
        let wrong_token = Launch { token: "guess".into(), ..launch(2, 3, port) };
        assert!(refusal(wrong_token).contains("token"));
        assert!(refusal(launch(2, 4, port)).contains("world of 3"));
        assert!(refusal(launch(7, 3, port)).contains("rank 7 of 3"));
        assert_eq!(exchange(&launch(1, 3, port), None, Duration::from_secs(10)).unwrap(), b"nccl-id");
        assert!(refusal(launch(1, 3, port)).contains("already arrived"));
        let e = format!("{:#}", exchange(&launch(1, 3, port), None, Duration::from_secs(10)).unwrap_err());
        assert!(e.contains("refused this rank") && e.contains("already arrived"), "{e}");
        assert_eq!(exchange(&launch(2, 3, port), None, Duration::from_secs(10)).unwrap(), b"nccl-id");
        server.join().unwrap().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "the silent client held the rendezvous: {:?}", t0.elapsed());
    }

    #[test]
    fn the_overall_timeout_holds_while_a_client_stalls() {
        let port = free_port();
        let t0 = Instant::now();
        let server = std::thread::spawn(move || exchange(&launch(0, 2, port), Some(b"id"), Duration::from_millis(800)));
        let mut stall = connect(port);
        stall.write_all(b"trm-").unwrap(); // half a hello, then nothing
        let e = format!("{:#}", server.join().unwrap().unwrap_err());
        assert!(e.contains("ranks 1 did not arrive"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn rank_zero_listens_only_on_master_addr() {
        let port = free_port();
        let l = launch(0, 2, port);
        assert_eq!(bind_address(&l).unwrap().ip().to_string(), "127.0.0.1");
        let server = std::thread::spawn(move || exchange(&l, Some(b"id"), Duration::from_millis(600)));
        std::thread::sleep(Duration::from_millis(200));
        // Not on every interface: the same port is still free on another local address.
        assert!(TcpListener::bind(("127.0.0.2", port)).is_ok(), "rank 0 bound more than MASTER_ADDR");
        server.join().unwrap().unwrap_err();
    }
}
