//! Free loopback ports for nodes that a test or a bench is about to start.
//!
//! Binding port 0 takes a port from the kernel's ephemeral range, and once that listener
//! is closed the kernel may give the same port to any outgoing connection before the node
//! binds it — a clash that fails a start now and then on a busy machine. Ports below the
//! ephemeral range are never given to outgoing connections, so one found free there stays
//! free unless another starter picks the same one; each search starts at an offset of its
//! own, so two starters seldom even look at the same ports.

use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};

/// The lowest port searched.
const SEARCH_FROM: u16 = 10_000;
/// The kernel's default first ephemeral port, when its setting cannot be read.
const EPHEMERAL_DEFAULT: u16 = 32_768;

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_DEFAULT)
}

/// `n` listeners on distinct free loopback ports below the ephemeral range (or, if that
/// range leaves too few, ephemeral ones). Hold them until every port is chosen, then drop
/// them just before starting what binds the ports.
pub fn hold_free_loopback(n: usize) -> Vec<TcpListener> {
    let end = ephemeral_start().max(SEARCH_FROM + 1);
    let span = u32::from(end - SEARCH_FROM);
    let start = search_offset(span);
    let mut held = Vec::with_capacity(n);
    for step in 0..span {
        if held.len() == n {
            break;
        }
        let port = SEARCH_FROM + ((start + step) % span) as u16;
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            held.push(listener);
        }
    }
    while held.len() < n {
        held.push(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port"));
    }
    held
}

/// The first of `len` consecutive ports, each free on loopback and all below the ephemeral
/// range, for a starter that numbers its ports from a base (`kv up --resp-port` and the
/// like, which give node `i` the base plus `i`). Searched as [`hold_free_loopback`]
/// searches, from an offset of the caller's own.
pub fn free_loopback_run(len: u16) -> u16 {
    let end = ephemeral_start();
    let last_base = end.saturating_sub(len).max(SEARCH_FROM);
    let span = u32::from(last_base - SEARCH_FROM) + 1;
    let start = search_offset(span);
    for step in 0..span {
        let base = SEARCH_FROM + ((start + step) % span) as u16;
        let free: Option<Vec<TcpListener>> = (base..base.saturating_add(len))
            .map(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok())
            .collect();
        if free.is_some() {
            return base;
        }
    }
    panic!("no {len} consecutive free loopback ports from {SEARCH_FROM} to {end}");
}

/// Where a search of `span` ports starts: random per call, so two starters (two test
/// processes, two threads) seldom look at the same ports.
fn search_offset(span: u32) -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() % u64::from(span.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_ports_is_free_and_below_the_ephemeral_range() {
        let base = free_loopback_run(18);
        assert!(
            base >= SEARCH_FROM && base + 18 <= ephemeral_start(),
            "{base}"
        );
        let held: Vec<TcpListener> = (base..base + 18)
            .map(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("a free port"))
            .collect();
        assert_eq!(held.len(), 18);
    }

    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range() {
        let held = hold_free_loopback(12);
        let mut ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert!(
            ports
                .iter()
                .all(|&p| (SEARCH_FROM..ephemeral_start()).contains(&p)),
            "{ports:?}"
        );
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 12);
    }
}
