//! The port-to-app map for the shared IP: 65,536 TCP and 65,536 UDP
//! entries, owned by the host so that it outlives any component.
//!
//! Apps bind through their `libretto:net/portmap` import; the manifest
//! decides which ports each app may hold; the network server reads it
//! through `portmap-lookup`. When an app exits or crashes its ports are
//! freed with [`Portmap::release_app`].

use std::ops::RangeInclusive;
use std::sync::RwLock;

/// An app as the portmap knows it (the host numbers apps from 1).
pub type AppId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    InUse,
    Forbidden,
    Exhausted,
    Invalid,
}

pub const EPHEMERAL: RangeInclusive<u16> = 49152..=65535;

/// Which ports an app may bind, per protocol.
#[derive(Clone, Debug, Default)]
pub struct PortPolicy {
    pub tcp: Vec<RangeInclusive<u16>>,
    pub udp: Vec<RangeInclusive<u16>>,
}

impl PortPolicy {
    /// Every port from 1 to 65,535, both protocols.
    pub fn any() -> PortPolicy {
        PortPolicy { tcp: vec![1..=65535], udp: vec![1..=65535] }
    }

    pub fn allows(&self, proto: Proto, port: u16) -> bool {
        let ranges = match proto {
            Proto::Tcp => &self.tcp,
            Proto::Udp => &self.udp,
        };
        ranges.iter().any(|r| r.contains(&port))
    }
}

struct Table {
    /// 0 = free, else the holder's AppId.
    owner: Box<[AppId]>,
    /// Where the next ephemeral search starts.
    cursor: u16,
}

impl Table {
    fn new() -> Table {
        Table { owner: vec![0; 65536].into_boxed_slice(), cursor: *EPHEMERAL.start() }
    }
}

pub struct Portmap {
    tcp: RwLock<Table>,
    udp: RwLock<Table>,
}

impl Default for Portmap {
    fn default() -> Self {
        Portmap::new()
    }
}

impl Portmap {
    pub fn new() -> Portmap {
        Portmap { tcp: RwLock::new(Table::new()), udp: RwLock::new(Table::new()) }
    }

    fn table(&self, proto: Proto) -> &RwLock<Table> {
        match proto {
            Proto::Tcp => &self.tcp,
            Proto::Udp => &self.udp,
        }
    }

    /// Bind `port` for `app`. Rebinding one's own port succeeds.
    pub fn bind(&self, app: AppId, policy: &PortPolicy, proto: Proto, port: u16) -> Result<(), BindError> {
        assert!(app != 0, "app ids start at 1");
        if port == 0 {
            return Err(BindError::Invalid);
        }
        if !policy.allows(proto, port) {
            return Err(BindError::Forbidden);
        }
        let mut t = self.table(proto).write().unwrap();
        match t.owner[port as usize] {
            0 => {
                t.owner[port as usize] = app;
                Ok(())
            }
            holder if holder == app => Ok(()),
            _ => Err(BindError::InUse),
        }
    }

    /// Bind a free ephemeral port the policy allows.
    pub fn bind_ephemeral(&self, app: AppId, policy: &PortPolicy, proto: Proto) -> Result<u16, BindError> {
        let mut t = self.table(proto).write().unwrap();
        let span = (*EPHEMERAL.end() - *EPHEMERAL.start()) as u32 + 1;
        let start = t.cursor;
        for i in 0..span {
            let port = *EPHEMERAL.start() + ((start - *EPHEMERAL.start()) as u32 + i).rem_euclid(span) as u16;
            if t.owner[port as usize] == 0 && policy.allows(proto, port) {
                t.owner[port as usize] = app;
                t.cursor = if port == *EPHEMERAL.end() { *EPHEMERAL.start() } else { port + 1 };
                return Ok(port);
            }
        }
        Err(BindError::Exhausted)
    }

    /// Free `port` if `app` holds it.
    pub fn unbind(&self, app: AppId, proto: Proto, port: u16) -> bool {
        let mut t = self.table(proto).write().unwrap();
        if t.owner[port as usize] == app && app != 0 {
            t.owner[port as usize] = 0;
            true
        } else {
            false
        }
    }

    /// The app holding `port`, if any.
    pub fn lookup(&self, proto: Proto, port: u16) -> Option<AppId> {
        match self.table(proto).read().unwrap().owner[port as usize] {
            0 => None,
            a => Some(a),
        }
    }

    /// Free every port `app` holds (it exited or crashed); returns how many.
    pub fn release_app(&self, app: AppId) -> usize {
        let mut n = 0;
        for proto in [Proto::Tcp, Proto::Udp] {
            let mut t = self.table(proto).write().unwrap();
            for o in t.owner.iter_mut() {
                if *o == app {
                    *o = 0;
                    n += 1;
                }
            }
        }
        n
    }

    /// Every bound port: (protocol, port, app), in port order.
    pub fn entries(&self) -> Vec<(Proto, u16, AppId)> {
        let mut out = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            let t = self.table(proto).read().unwrap();
            for (port, &o) in t.owner.iter().enumerate() {
                if o != 0 {
                    out.push((proto, port as u16, o));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_refused_to_another_app() {
        let pm = Portmap::new();
        let any = PortPolicy::any();
        pm.bind(1, &any, Proto::Tcp, 80).unwrap();
        assert_eq!(pm.bind(2, &any, Proto::Tcp, 80), Err(BindError::InUse));
        // The UDP table is separate.
        pm.bind(2, &any, Proto::Udp, 80).unwrap();
        assert_eq!(pm.lookup(Proto::Tcp, 80), Some(1));
        assert_eq!(pm.lookup(Proto::Udp, 80), Some(2));
    }

    #[test]
    fn a_forbidden_port_is_refused() {
        let pm = Portmap::new();
        let policy = PortPolicy { tcp: vec![8080..=8081], udp: vec![] };
        assert_eq!(pm.bind(1, &policy, Proto::Tcp, 80), Err(BindError::Forbidden));
        assert_eq!(pm.bind(1, &policy, Proto::Udp, 8080), Err(BindError::Forbidden));
        pm.bind(1, &policy, Proto::Tcp, 8081).unwrap();
        assert_eq!(pm.bind(1, &policy, Proto::Tcp, 0), Err(BindError::Invalid));
    }

    #[test]
    fn a_crashed_apps_ports_are_freed() {
        let pm = Portmap::new();
        let any = PortPolicy::any();
        pm.bind(3, &any, Proto::Tcp, 1).unwrap();
        pm.bind(3, &any, Proto::Tcp, 65535).unwrap();
        pm.bind(3, &any, Proto::Udp, 53).unwrap();
        pm.bind(4, &any, Proto::Udp, 54).unwrap();
        assert_eq!(pm.release_app(3), 3);
        assert_eq!(pm.lookup(Proto::Tcp, 65535), None);
        assert_eq!(pm.lookup(Proto::Udp, 54), Some(4));
        pm.bind(5, &any, Proto::Tcp, 65535).unwrap();
    }

    #[test]
    fn ephemeral_ports_run_out_and_only_the_holder_unbinds() {
        let pm = Portmap::new();
        let policy = PortPolicy { tcp: vec![65534..=65535], udp: vec![] };
        let a = pm.bind_ephemeral(1, &policy, Proto::Tcp).unwrap();
        let b = pm.bind_ephemeral(1, &policy, Proto::Tcp).unwrap();
        assert_ne!(a, b);
        assert_eq!(pm.bind_ephemeral(1, &policy, Proto::Tcp), Err(BindError::Exhausted));
        assert!(!pm.unbind(2, Proto::Tcp, a));
        assert!(pm.unbind(1, Proto::Tcp, a));
        assert_eq!(pm.bind_ephemeral(1, &policy, Proto::Tcp), Ok(a));
    }

    #[test]
    fn all_65536_entries_of_each_table_are_usable() {
        let pm = Portmap::new();
        let any = PortPolicy::any();
        for port in 1..=65535u16 {
            pm.bind(1 + (port as u32 % 7), &any, Proto::Udp, port).unwrap();
        }
        assert_eq!(pm.entries().len(), 65535);
        assert_eq!(pm.bind_ephemeral(9, &any, Proto::Udp), Err(BindError::Exhausted));
    }
}
