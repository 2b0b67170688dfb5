//! Which connections are admitted at accept: at most `max_connections` in
//! all and `max_connections_per_ip` from one address (Kafka's
//! `max.connections.per.ip`, with its overrides), so one host cannot take
//! every slot. A [`ConnectionSlot`] holds both counts until the connection
//! ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::NetworkConfig;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Broker,
    /// The address has its `max_connections_per_ip` open.
    Address,
}

#[derive(Debug)]
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    per_ip: usize,
    overrides: HashMap<IpAddr, usize>,
    /// Open connections per address; an address leaves the map with its
    /// last connection, so its size follows the open connections.
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimits {
    pub fn new(net: &NetworkConfig) -> Result<Arc<ConnectionLimits>, String> {
        Ok(Arc::new(ConnectionLimits {
            total: Arc::new(Semaphore::new(net.max_connections)),
            per_ip: net.max_connections_per_ip,
            overrides: net.per_ip_overrides()?,
            open: Mutex::new(HashMap::new()),
        }))
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let ip = ip.to_canonical();
        let limit = self.overrides.get(&ip).copied().unwrap_or(self.per_ip);
        let mut open = self.open.lock();
        let count = open.get(&ip).copied().unwrap_or(0);
        if count >= limit {
            return Err(Refused::Address);
        }
        let permit = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| Refused::Broker)?;
        open.insert(ip, count + 1);
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
            _permit: permit,
        })
    }

    /// Open connections from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize, overrides: &str) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(&NetworkConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            max_connections_per_ip_overrides: overrides.into(),
            ..NetworkConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn per_address_and_total_limits_with_overrides() {
        let l = limits(6, 2, "10.0.0.2:3,10.0.0.3:0");
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Refused::Address);
        let bs: Vec<_> = (0..3).map(|_| l.admit(b).unwrap()).collect();
        assert_eq!(l.admit(b).unwrap_err(), Refused::Address);
        assert_eq!(
            l.admit(c).unwrap_err(),
            Refused::Address,
            "override 0 blocks"
        );
        // IPv4-mapped IPv6 is the same address.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(l.admit(mapped).unwrap_err(), Refused::Address);
        drop(a1);
        assert_eq!(l.open_from(a), 1);
        let _a3 = l.admit(mapped).unwrap();
        let _d = l.admit([10, 0, 0, 4].into()).unwrap();
        assert_eq!(
            l.admit([10, 0, 0, 5].into()).unwrap_err(),
            Refused::Broker,
            "six open in all"
        );
        drop(bs);
        assert_eq!(l.open_from(b), 0);
        assert_eq!(l.open.lock().len(), 2, "closed addresses leave the table");
    }
}
