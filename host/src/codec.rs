//! The packed batch formats of `libretto:net/link` and `rings`: receive
//! descriptors, transmit descriptors with gather chunks, and placements.
//! The WIT comments in `wit/deps/net/link.wit` are the specification; the
//! byte vectors in `test/vectors/link.json` are shared with the TypeScript
//! codec (`components/lib/linkcodec.ts`) so both sides agree byte for byte.
//!
//! Everything is little-endian. Parsers check every length before reading
//! and report a cut-short descriptor instead of panicking.

use crate::ring::{Frame, Gso, Offload};

/// `struct virtio_net_hdr` without the mergeable-buffers count.
pub const VNET_LEN: usize = 10;
pub const RX_DESC_LEN: usize = 20;
pub const TX_DESC_LEN: usize = 14;
pub const CHUNK_LEN: usize = 20;
pub const PLACEMENT_LEN: usize = 24;

pub const VNET_F_NEEDS_CSUM: u8 = 1;
pub const VNET_F_DATA_VALID: u8 = 2;
pub const VNET_GSO_NONE: u8 = 0;
pub const VNET_GSO_TCPV4: u8 = 1;
pub const VNET_GSO_UDP_L4: u8 = 5;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn vnet_encode(o: &Offload) -> [u8; VNET_LEN] {
    let mut h = [0u8; VNET_LEN];
    h[0] = (o.needs_csum as u8) * VNET_F_NEEDS_CSUM | (o.csum_valid as u8) * VNET_F_DATA_VALID;
    h[1] = match o.gso {
        Gso::None => VNET_GSO_NONE,
        Gso::TcpV4 => VNET_GSO_TCPV4,
        Gso::UdpL4 => VNET_GSO_UDP_L4,
    };
    h[2..4].copy_from_slice(&o.hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&o.gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&o.csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&o.csum_offset.to_le_bytes());
    h
}

/// Decode a virtio-net header; None for unknown flags or gso types.
pub fn vnet_decode(h: &[u8]) -> Option<Offload> {
    if h.len() < VNET_LEN || h[0] & !(VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID) != 0 {
        return None;
    }
    let gso = match h[1] {
        VNET_GSO_NONE => Gso::None,
        VNET_GSO_TCPV4 => Gso::TcpV4,
        VNET_GSO_UDP_L4 => Gso::UdpL4,
        _ => return None,
    };
    Some(Offload {
        needs_csum: h[0] & VNET_F_NEEDS_CSUM != 0,
        csum_valid: h[0] & VNET_F_DATA_VALID != 0,
        gso,
        hdr_len: u16_at(h, 2),
        gso_size: u16_at(h, 4),
        csum_start: u16_at(h, 6),
        csum_offset: u16_at(h, 8),
    })
}

/// Append one receive descriptor and the frame's head to `out`.
pub fn put_rx(out: &mut Vec<u8>, id: u32, frame: &Frame, head_bytes: usize) {
    let h = frame.data.len().min(head_bytes).min(u16::MAX as usize);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(frame.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&vnet_encode(&frame.offload));
    out.extend_from_slice(&(h as u16).to_le_bytes());
    out.extend_from_slice(&frame.data[..h]);
}

/// Where a transmit chunk's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkSource {
    /// Index into the call's list of byte queues.
    Queue(u32),
    /// A frame the component holds.
    Frame(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub src: ChunkSource,
    pub offset: u64,
    pub len: u32,
}

/// One transmit descriptor, borrowed from the batch.
#[derive(Debug, PartialEq, Eq)]
pub struct TxDesc<'a> {
    pub head: &'a [u8],
    pub offload: Option<Offload>,
    pub chunks: Vec<Chunk>,
}

/// Iterate over a transmit batch. Yields `Err(())` once, for a descriptor
/// cut short or with an unknown chunk source, and then stops: nothing after
/// it can be framed.
pub struct TxIter<'a> {
    blob: &'a [u8],
    at: usize,
    broken: bool,
}

pub fn tx_iter(blob: &[u8]) -> TxIter<'_> {
    TxIter { blob, at: 0, broken: false }
}

impl<'a> Iterator for TxIter<'a> {
    type Item = Result<TxDesc<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.broken || self.at >= self.blob.len() {
            return None;
        }
        let b = &self.blob[self.at..];
        let fail = |s: &mut Self| {
            s.broken = true;
            Some(Err(()))
        };
        if b.len() < TX_DESC_LEN {
            return fail(self);
        }
        let head_len = u16_at(b, 0) as usize;
        let chunk_count = u16_at(b, 2) as usize;
        let total = TX_DESC_LEN + head_len + chunk_count * CHUNK_LEN;
        if b.len() < total {
            return fail(self);
        }
        let offload = vnet_decode(&b[4..4 + VNET_LEN]);
        let head = &b[TX_DESC_LEN..TX_DESC_LEN + head_len];
        let mut chunks = Vec::with_capacity(chunk_count);
        for i in 0..chunk_count {
            let c = &b[TX_DESC_LEN + head_len + i * CHUNK_LEN..];
            let reference = u32_at(c, 4);
            let src = match c[0] {
                0 => ChunkSource::Queue(reference),
                1 => ChunkSource::Frame(reference),
                _ => return fail(self),
            };
            chunks.push(Chunk { src, offset: u64_at(c, 8), len: u32_at(c, 16) });
        }
        self.at += total;
        Some(Ok(TxDesc { head, offload, chunks }))
    }
}

/// Append a transmit descriptor (the host's own senders and the tests).
pub fn put_tx(out: &mut Vec<u8>, head: &[u8], offload: &Offload, chunks: &[Chunk]) {
    out.extend_from_slice(&(head.len() as u16).to_le_bytes());
    out.extend_from_slice(&(chunks.len() as u16).to_le_bytes());
    out.extend_from_slice(&vnet_encode(offload));
    out.extend_from_slice(head);
    for c in chunks {
        let (kind, reference) = match c.src {
            ChunkSource::Queue(q) => (0u8, q),
            ChunkSource::Frame(f) => (1u8, f),
        };
        out.extend_from_slice(&[kind, 0, 0, 0]);
        out.extend_from_slice(&reference.to_le_bytes());
        out.extend_from_slice(&c.offset.to_le_bytes());
        out.extend_from_slice(&c.len.to_le_bytes());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub frame: u32,
    pub offset: u32,
    pub len: u32,
    pub queue: u32,
    pub at: u64,
}

/// Parse a placement list; None if it is not a whole number of them.
pub fn placements(blob: &[u8]) -> Option<Vec<Placement>> {
    if blob.len() % PLACEMENT_LEN != 0 {
        return None;
    }
    Some(
        blob.chunks_exact(PLACEMENT_LEN)
            .map(|p| Placement { frame: u32_at(p, 0), offset: u32_at(p, 4), len: u32_at(p, 8), queue: u32_at(p, 12), at: u64_at(p, 16) })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../test/vectors/link.json")).unwrap()
    }

    fn offload_of(v: &Value) -> Offload {
        Offload {
            needs_csum: v["needsCsum"].as_bool().unwrap(),
            csum_valid: v["csumValid"].as_bool().unwrap(),
            gso: match v["gso"].as_str().unwrap() {
                "none" => Gso::None,
                "tcpv4" => Gso::TcpV4,
                "udp-l4" => Gso::UdpL4,
                g => panic!("gso {g}"),
            },
            hdr_len: v["hdrLen"].as_u64().unwrap() as u16,
            gso_size: v["gsoSize"].as_u64().unwrap() as u16,
            csum_start: v["csumStart"].as_u64().unwrap() as u16,
            csum_offset: v["csumOffset"].as_u64().unwrap() as u16,
        }
    }

    #[test]
    fn rx_descriptors_match_the_shared_vectors() {
        for case in vectors()["rx"].as_array().unwrap() {
            let data = unhex(case["frame"].as_str().unwrap());
            let frame = Frame { data, offload: offload_of(&case["offload"]) };
            let mut out = Vec::new();
            put_rx(&mut out, case["id"].as_u64().unwrap() as u32, &frame, case["headBytes"].as_u64().unwrap() as usize);
            assert_eq!(out, unhex(case["bytes"].as_str().unwrap()), "rx vector {}", case["name"]);
        }
    }

    #[test]
    fn tx_descriptors_match_the_shared_vectors() {
        for case in vectors()["tx"].as_array().unwrap() {
            let bytes = unhex(case["bytes"].as_str().unwrap());
            let parsed: Vec<_> = tx_iter(&bytes).collect();
            assert_eq!(parsed.len(), 1, "tx vector {}", case["name"]);
            let d = parsed[0].as_ref().unwrap();
            assert_eq!(d.head, unhex(case["head"].as_str().unwrap()).as_slice());
            assert_eq!(d.offload, Some(offload_of(&case["offload"])));
            let chunks: Vec<Chunk> = case["chunks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| Chunk {
                    src: if c["source"] == "queue" {
                        ChunkSource::Queue(c["ref"].as_u64().unwrap() as u32)
                    } else {
                        ChunkSource::Frame(c["ref"].as_u64().unwrap() as u32)
                    },
                    offset: c["offset"].as_u64().unwrap(),
                    len: c["len"].as_u64().unwrap() as u32,
                })
                .collect();
            assert_eq!(d.chunks, chunks);
            let mut again = Vec::new();
            put_tx(&mut again, d.head, d.offload.as_ref().unwrap(), &d.chunks);
            assert_eq!(again, bytes, "round trip {}", case["name"]);
        }
    }

    #[test]
    fn placements_match_the_shared_vectors() {
        for case in vectors()["place"].as_array().unwrap() {
            let p = placements(&unhex(case["bytes"].as_str().unwrap())).unwrap();
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].frame as u64, case["frame"].as_u64().unwrap());
            assert_eq!(p[0].offset as u64, case["offset"].as_u64().unwrap());
            assert_eq!(p[0].len as u64, case["len"].as_u64().unwrap());
            assert_eq!(p[0].queue as u64, case["queue"].as_u64().unwrap());
            assert_eq!(p[0].at, case["at"].as_u64().unwrap());
        }
    }

    #[test]
    fn cut_short_or_unknown_input_is_an_error_not_a_panic() {
        let mut good = Vec::new();
        put_tx(&mut good, &[1, 2, 3], &Offload::default(), &[Chunk { src: ChunkSource::Frame(7), offset: 1, len: 2 }]);
        for cut in 0..good.len() {
            let mut two = good.clone();
            two.extend_from_slice(&good[..cut]);
            let r: Vec<_> = tx_iter(&two).collect();
            if cut == 0 {
                assert_eq!(r.len(), 1);
            } else {
                assert_eq!(r.len(), 2);
                assert!(r[1].is_err(), "cut at {cut}");
            }
        }
        let mut bad_src = good.clone();
        bad_src[TX_DESC_LEN + 3] = 9;
        assert!(tx_iter(&bad_src).next().unwrap().is_err());
        assert_eq!(placements(&[0u8; 25]), None);
        assert_eq!(placements(&[]), Some(vec![]));
        assert!(vnet_decode(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none(), "unknown flag");
        assert!(vnet_decode(&[0, 3, 0, 0, 0, 0, 0, 0, 0, 0]).is_none(), "unknown gso type");
    }
}
