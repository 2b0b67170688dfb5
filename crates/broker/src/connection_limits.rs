//! Which connections are admitted at accept: at most `max_connections` in
//! all and `max_connections_per_ip` from one address (Kafka's
//! `max.connections.per.ip`, with its overrides), so one host cannot take
//! every slot. A [`ConnectionSlot`] holds both counts until the connection
//! ends. The limits can change while the broker runs (dynamic broker
//! configs): a lower limit refuses new connections and leaves open ones be,
//! as Kafka does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::NetworkConfig;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Broker,
    /// The address has its `max_connections_per_ip` open.
    Address,
}

/// The limits in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_ip: usize,
    pub overrides: HashMap<IpAddr, usize>,
}

impl Limits {
    pub fn from_config(net: &NetworkConfig) -> Result<Limits, String> {
        Ok(Limits {
            total: net.max_connections,
            per_ip: net.max_connections_per_ip,
            overrides: net.per_ip_overrides()?,
        })
    }
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    total: usize,
    /// Open connections per address; an address leaves the map with its
    /// last connection, so its size follows the open connections.
    open: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
pub struct ConnectionLimits {
    inner: Mutex<Inner>,
}

impl ConnectionLimits {
    pub fn new(net: &NetworkConfig) -> Result<Arc<ConnectionLimits>, String> {
        Ok(Arc::new(ConnectionLimits {
            inner: Mutex::new(Inner {
                limits: Limits::from_config(net)?,
                total: 0,
                open: HashMap::new(),
            }),
        }))
    }

    /// Replaces the limits; returns whether they changed.
    pub fn reconfigure(&self, limits: Limits) -> bool {
        let mut inner = self.inner.lock();
        let changed = inner.limits != limits;
        inner.limits = limits;
        changed
    }

    pub fn limits(&self) -> Limits {
        self.inner.lock().limits.clone()
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let ip = ip.to_canonical();
        let mut inner = self.inner.lock();
        let limit = inner
            .limits
            .overrides
            .get(&ip)
            .copied()
            .unwrap_or(inner.limits.per_ip);
        let count = inner.open.get(&ip).copied().unwrap_or(0);
        if count >= limit {
            return Err(Refused::Address);
        }
        if inner.total >= inner.limits.total {
            return Err(Refused::Broker);
        }
        inner.total += 1;
        inner.open.insert(ip, count + 1);
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Open connections from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.inner
            .lock()
            .open
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
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut inner = self.limits.inner.lock();
        inner.total = inner.total.saturating_sub(1);
        if let Some(n) = inner.open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                inner.open.remove(&self.ip);
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
        assert_eq!(
            l.inner.lock().open.len(),
            2,
            "closed addresses leave the table"
        );
    }

    #[test]
    fn lower_limits_refuse_new_connections_and_keep_open_ones() {
        let l = limits(10, 10, "");
        let a: IpAddr = [10, 0, 0, 1].into();
        let held: Vec<_> = (0..3).map(|_| l.admit(a).unwrap()).collect();
        let mut lower = l.limits();
        lower.total = 2;
        assert!(l.reconfigure(lower.clone()));
        assert!(!l.reconfigure(lower), "same limits: no change");
        assert_eq!(l.admit([10, 0, 0, 2].into()).unwrap_err(), Refused::Broker);
        assert_eq!(l.open_from(a), 3, "open connections stay");
        drop(held);
        let _b = l.admit([10, 0, 0, 2].into()).unwrap();
        l.reconfigure(Limits {
            total: 10,
            per_ip: 1,
            overrides: [(a, 2)].into(),
        });
        let _a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Refused::Address);
    }
}
