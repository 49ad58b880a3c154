//! A component's link: the rings behind its `libretto:net/link` import, and
//! the frames it holds between `recv` and `release`.

use crate::ring::{Frame, Notify, Offload, Ring};
use std::sync::{Arc, RwLock};

/// Offloads a link performs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub tx_csum: bool,
    pub tso: bool,
    pub rx_csum: bool,
    pub lro: bool,
}

/// What a link is.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    pub mac: u64,
    pub mtu: u32,
    pub max_frame: u32,
    pub caps: Caps,
    pub head_bytes: u32,
    pub max_batch: u32,
}

impl LinkInfo {
    /// An Ethernet link with every offload and 64 KiB frames.
    pub fn virtual_link(mac: u64) -> LinkInfo {
        LinkInfo {
            mac,
            mtu: 1500,
            max_frame: 65535 + 14,
            caps: Caps { tx_csum: true, tso: true, rx_csum: true, lro: true },
            head_bytes: 128,
            max_batch: 256,
        }
    }
}

/// One binding of a link: where its frames come from and go to.
pub struct LinkPort {
    pub info: LinkInfo,
    /// Frames for the component.
    pub rx: Arc<Ring>,
    /// Frames from the component.
    pub tx: Arc<Ring>,
}

/// The component's link, which the host may rebind while it runs (the
/// dynamic switch between server and direct mode).
#[derive(Clone)]
pub struct LinkSlot {
    port: Arc<RwLock<Arc<LinkPort>>>,
    /// What the component's `wait` sleeps on; every ring bound as its rx
    /// wakes it.
    pub notify: Arc<Notify>,
}

impl LinkSlot {
    pub fn new(port: LinkPort, notify: Arc<Notify>) -> LinkSlot {
        port.rx.set_consumer(notify.clone());
        LinkSlot { port: Arc::new(RwLock::new(Arc::new(port))), notify }
    }

    pub fn get(&self) -> Arc<LinkPort> {
        self.port.read().unwrap().clone()
    }

    /// Bind the component to another port; the old one is returned.
    pub fn rebind(&self, port: LinkPort) -> Arc<LinkPort> {
        port.rx.set_consumer(self.notify.clone());
        let new = Arc::new(port);
        let old = std::mem::replace(&mut *self.port.write().unwrap(), new);
        self.notify.notify();
        old
    }
}

/// A loopback link for tests: every frame sent comes back.
pub fn loopback(info: LinkInfo, ring_frames: usize) -> LinkSlot {
    let notify = Notify::new();
    let ring = Ring::new("loopback", ring_frames, notify.clone());
    LinkSlot::new(LinkPort { info, rx: ring.clone(), tx: ring }, notify)
}

/// Two links joined back to back: what one sends, the other receives.
pub fn pair(a: LinkInfo, b: LinkInfo, ring_frames: usize) -> (LinkSlot, LinkSlot) {
    let na = Notify::new();
    let nb = Notify::new();
    let a_to_b = Ring::new("a->b", ring_frames, nb.clone());
    let b_to_a = Ring::new("b->a", ring_frames, na.clone());
    (
        LinkSlot::new(LinkPort { info: a, rx: b_to_a.clone(), tx: a_to_b.clone() }, na),
        LinkSlot::new(LinkPort { info: b, rx: a_to_b, tx: b_to_a }, nb),
    )
}

/// Frame ids handed out start at 2^31, so every component sees ids that a
/// JavaScript engine mishandles if it treats u32 as i32.
pub const FRAME_ID_BASE: u32 = 0x8000_0000;

/// Frames a component holds, by id. Bounded: `recv` hands out no more
/// frames than there are free slots. `T` is the frame and whatever the
/// host keeps beside it (the network server's frames remember their port).
pub struct HeldFrames<T = Frame> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    limit: usize,
}

impl<T> HeldFrames<T> {
    pub fn new(limit: usize) -> HeldFrames<T> {
        HeldFrames { slots: Vec::new(), free: Vec::new(), limit }
    }

    pub fn room(&self) -> usize {
        self.limit - (self.slots.len() - self.free.len())
    }

    pub fn held(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn insert(&mut self, f: T) -> u32 {
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(f);
                i
            }
            None => {
                assert!(self.slots.len() < self.limit, "caller checks room()");
                self.slots.push(Some(f));
                (self.slots.len() - 1) as u32
            }
        };
        FRAME_ID_BASE | idx
    }

    pub fn ids(&self) -> Vec<u32> {
        self.slots.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| FRAME_ID_BASE | i as u32).collect()
    }

    fn index(id: u32) -> Option<usize> {
        if id & FRAME_ID_BASE == 0 {
            return None;
        }
        Some((id & !FRAME_ID_BASE) as usize)
    }

    pub fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(Self::index(id)?)?.as_ref()
    }

    pub fn take(&mut self, id: u32) -> Option<T> {
        let i = Self::index(id)?;
        let f = self.slots.get_mut(i)?.take()?;
        self.free.push(i as u32);
        Some(f)
    }

    /// Drop every held frame (the component is gone).
    pub fn clear(&mut self) -> usize {
        let n = self.held();
        self.slots.clear();
        self.free.clear();
        n
    }
}

/// Checks a frame a component wants to send.
pub fn tx_frame_valid(len: usize, off: &Offload, info: &LinkInfo) -> bool {
    if len < 14 || len > info.max_frame as usize {
        return false;
    }
    if off.needs_csum && off.csum_start as usize + off.csum_offset as usize + 2 > len {
        return false;
    }
    true
}
