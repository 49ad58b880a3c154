//! Host-owned memory for components: `libretto:io/buffers`.
//!
//! A [`ByteQueue`] is a window onto a byte stream (a socket's send or
//! receive buffer) addressed by absolute `u64` stream offsets; a [`Buffer`]
//! is a fixed region for block I/O. Both keep their bytes in the host so a
//! JavaScript component moves offsets, not payload.

use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// Largest queue or buffer a component may ask for.
pub const MAX_BYTES: u32 = 64 << 20;

/// Why a queue or buffer operation did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufError {
    OutOfRange,
    NoMemory,
}

/// A circular byte window `[head, head + capacity)` with readable bytes in
/// `[head, tail)`.
///
/// Interior mutability lets the host borrow two queues of one component at
/// once (splice, gather from one queue while placing into another).
pub struct ByteQueue {
    inner: Mutex<QueueState>,
}

struct QueueState {
    buf: Box<[u8]>,
    head: u64,
    tail: u64,
    /// Where the next `fill` continues the pattern stream.
    fill_pos: u64,
    /// Running digest of bytes that left the queue, if tracked.
    digest: Option<(Sha256, u64)>,
}

/// The pattern stream's byte at position `p` (see `fill` in buffers.wit).
pub fn pattern_byte(seed: u64, p: u64) -> u8 {
    (splitmix64(seed.wrapping_add(p / 8)) >> (8 * (p % 8))) as u8
}

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Append `len` bytes of pattern `seed` from stream position `pos` to `out`.
pub fn pattern(seed: u64, pos: u64, len: usize, out: &mut Vec<u8>) {
    out.reserve(len);
    let mut p = pos;
    let end = pos + len as u64;
    while p < end {
        let word = splitmix64(seed.wrapping_add(p / 8)).to_le_bytes();
        let from = (p % 8) as usize;
        let take = (8 - from).min((end - p) as usize);
        out.extend_from_slice(&word[from..from + take]);
        p += take as u64;
    }
}

impl QueueState {
    fn cap(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Copy `data` into the ring at stream offset `at` (caller checked it
    /// lies in the window).
    fn put(&mut self, at: u64, data: &[u8]) {
        let cap = self.buf.len();
        if cap == 0 || data.is_empty() {
            return;
        }
        let start = (at % cap as u64) as usize;
        let first = data.len().min(cap - start);
        self.buf[start..start + first].copy_from_slice(&data[..first]);
        self.buf[..data.len() - first].copy_from_slice(&data[first..]);
    }

    /// Bytes [head, to) are leaving the queue: feed the digest if tracked.
    fn leaving(&mut self, to: u64) {
        if self.digest.is_none() || to <= self.head {
            return;
        }
        let mut tmp = Vec::new();
        let head = self.head;
        self.get(head, (to - head) as usize, &mut tmp);
        if let Some((h, n)) = &mut self.digest {
            h.update(&tmp);
            *n += tmp.len() as u64;
        }
    }

    /// Append `len` bytes at stream offset `at` to `out`.
    fn get(&self, at: u64, len: usize, out: &mut Vec<u8>) {
        let cap = self.buf.len();
        if cap == 0 || len == 0 {
            return;
        }
        let start = (at % cap as u64) as usize;
        let first = len.min(cap - start);
        out.extend_from_slice(&self.buf[start..start + first]);
        out.extend_from_slice(&self.buf[..len - first]);
    }
}

impl ByteQueue {
    pub fn new(capacity: u32) -> Result<ByteQueue, BufError> {
        if capacity > MAX_BYTES {
            return Err(BufError::NoMemory);
        }
        Ok(ByteQueue {
            inner: Mutex::new(QueueState {
                buf: vec![0u8; capacity as usize].into_boxed_slice(),
                head: 0,
                tail: 0,
                fill_pos: 0,
                digest: None,
            }),
        })
    }

    pub fn capacity(&self) -> u32 {
        self.inner.lock().unwrap().buf.len() as u32
    }

    pub fn head(&self) -> u64 {
        self.inner.lock().unwrap().head
    }

    pub fn tail(&self) -> u64 {
        self.inner.lock().unwrap().tail
    }

    /// Append at `tail`; returns how many bytes fitted.
    pub fn append(&self, data: &[u8]) -> u32 {
        let mut s = self.inner.lock().unwrap();
        let room = s.head + s.cap() - s.tail;
        let n = (data.len() as u64).min(room) as usize;
        let tail = s.tail;
        s.put(tail, &data[..n]);
        s.tail += n as u64;
        n as u32
    }

    /// Move up to `len` bytes from the head of `src` to our tail.
    pub fn splice_from(&self, src: &ByteQueue, len: u32) -> u32 {
        if std::ptr::eq(self, src) {
            return 0;
        }
        let mut tmp = Vec::new();
        {
            let mut d = self.inner.lock().unwrap();
            let mut s = src.inner.lock().unwrap();
            let room = d.head + d.cap() - d.tail;
            let n = (len as u64).min(s.tail - s.head).min(room) as usize;
            let head = s.head;
            s.get(head, n, &mut tmp);
            if let Some((h, count)) = &mut s.digest {
                h.update(&tmp);
                *count += n as u64;
            }
            s.head += n as u64;
            let tail = d.tail;
            d.put(tail, &tmp);
            d.tail += n as u64;
        }
        tmp.len() as u32
    }

    /// Copy out and remove up to `max` bytes from `head`.
    pub fn read(&self, max: u32) -> Vec<u8> {
        let mut s = self.inner.lock().unwrap();
        let n = (max as u64).min(s.tail - s.head) as usize;
        let mut out = Vec::with_capacity(n);
        let head = s.head;
        s.get(head, n, &mut out);
        if let Some((h, count)) = &mut s.digest {
            h.update(&out);
            *count += n as u64;
        }
        s.head += n as u64;
        out
    }

    /// Move up to `max` bytes from `head` into `dst` at `offset` (a socket's
    /// bytes to a block buffer). Nothing moves if the range does not fit.
    pub fn read_into(&self, dst: &Buffer, offset: u32, max: u32) -> Result<u32, BufError> {
        if offset as u64 + max as u64 > dst.len() as u64 {
            return Err(BufError::OutOfRange);
        }
        let bytes = self.read(max);
        dst.write(offset, &bytes)?;
        Ok(bytes.len() as u32)
    }

    /// Copy `len` readable bytes from stream offset `at` to `out`.
    pub fn copy_range(&self, at: u64, len: u32, out: &mut Vec<u8>) -> Result<(), BufError> {
        let s = self.inner.lock().unwrap();
        let end = at.checked_add(len as u64).ok_or(BufError::OutOfRange)?;
        if at < s.head || end > s.tail {
            return Err(BufError::OutOfRange);
        }
        s.get(at, len as usize, out);
        Ok(())
    }

    /// Write `data` at stream offset `at` inside the window without moving
    /// `tail`.
    pub fn write_at(&self, at: u64, data: &[u8]) -> Result<(), BufError> {
        let mut s = self.inner.lock().unwrap();
        let end = at.checked_add(data.len() as u64).ok_or(BufError::OutOfRange)?;
        if at < s.head || end > s.head + s.cap() {
            return Err(BufError::OutOfRange);
        }
        s.put(at, data);
        Ok(())
    }

    /// Make bytes up to `to` readable.
    pub fn advance_tail(&self, to: u64) -> Result<(), BufError> {
        let mut s = self.inner.lock().unwrap();
        if to < s.tail || to > s.head + s.cap() {
            return Err(BufError::OutOfRange);
        }
        s.tail = to;
        Ok(())
    }

    /// Drop bytes before `to`.
    pub fn release(&self, to: u64) -> Result<(), BufError> {
        let mut s = self.inner.lock().unwrap();
        if to < s.head || to > s.tail {
            return Err(BufError::OutOfRange);
        }
        s.leaving(to);
        s.head = to;
        Ok(())
    }

    /// Append up to `len` bytes copied from `src[offset..]`; returns how many.
    pub fn append_from_buffer(&self, src: &Buffer, offset: u32, len: u32) -> Result<u32, BufError> {
        let b = src.bytes.lock().unwrap();
        let end = offset as u64 + len as u64;
        if end > b.len() as u64 {
            return Err(BufError::OutOfRange);
        }
        Ok(self.append(&b[offset as usize..end as usize]))
    }

    /// Append up to `len` bytes of pattern `seed`, continuing the stream.
    pub fn fill(&self, seed: u64, len: u32) -> u32 {
        let mut s = self.inner.lock().unwrap();
        let room = s.head + s.cap() - s.tail;
        let n = (len as u64).min(room) as usize;
        let mut tmp = Vec::new();
        pattern(seed, s.fill_pos, n, &mut tmp);
        let tail = s.tail;
        s.put(tail, &tmp);
        s.tail += n as u64;
        s.fill_pos += n as u64;
        n as u32
    }

    pub fn track_digest(&self) {
        let mut s = self.inner.lock().unwrap();
        if s.digest.is_none() {
            s.digest = Some((Sha256::new(), 0));
        }
    }

    /// The digest so far and the bytes it covers (empty if not tracked).
    pub fn digest(&self) -> (Vec<u8>, u64) {
        let s = self.inner.lock().unwrap();
        match &s.digest {
            Some((h, n)) => (h.clone().finalize().to_vec(), *n),
            None => (Vec::new(), 0),
        }
    }
}

/// Zeroed memory aligned to a page, so the block backend's O_DIRECT
/// commands can read and write a buffer in place.
pub struct AlignedBytes {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory, owned; access goes through the Buffer's mutex (the
// block backend's in-flight I/O is the documented exception).
unsafe impl Send for AlignedBytes {}
unsafe impl Sync for AlignedBytes {}

/// The alignment of every buffer's first byte.
pub const BUFFER_ALIGN: usize = 4096;

impl AlignedBytes {
    fn zeroed(len: usize) -> Option<AlignedBytes> {
        if len == 0 {
            return Some(AlignedBytes { ptr: std::ptr::NonNull::dangling(), len: 0 });
        }
        let layout = std::alloc::Layout::from_size_align(len, BUFFER_ALIGN).ok()?;
        // SAFETY: a non-zero size and a valid alignment.
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(AlignedBytes { ptr, len })
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in zeroed() with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), std::alloc::Layout::from_size_align(self.len, BUFFER_ALIGN).unwrap()) };
        }
    }
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes (or dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A fixed-size region of host memory. Cloning shares the memory, so an
/// in-flight block command keeps it alive after the component drops it.
#[derive(Clone)]
pub struct Buffer {
    pub bytes: Arc<Mutex<AlignedBytes>>,
}

impl Buffer {
    pub fn new(len: u32) -> Result<Buffer, BufError> {
        if len > MAX_BYTES {
            return Err(BufError::NoMemory);
        }
        let bytes = AlignedBytes::zeroed(len as usize).ok_or(BufError::NoMemory)?;
        Ok(Buffer { bytes: Arc::new(Mutex::new(bytes)) })
    }

    /// The address of byte `offset`, for I/O the kernel does in place. The
    /// caller keeps a clone of the buffer until that I/O completes.
    pub fn addr(&self, offset: usize) -> *mut u8 {
        let b = self.bytes.lock().unwrap();
        // SAFETY: callers check offset against len first.
        unsafe { b.ptr.as_ptr().add(offset) }
    }

    pub fn len(&self) -> u32 {
        self.bytes.lock().unwrap().len() as u32
    }

    pub fn read(&self, offset: u32, len: u32) -> Result<Vec<u8>, BufError> {
        let b = self.bytes.lock().unwrap();
        let end = offset as u64 + len as u64;
        if end > b.len() as u64 {
            return Err(BufError::OutOfRange);
        }
        Ok(b[offset as usize..end as usize].to_vec())
    }

    pub fn write(&self, offset: u32, data: &[u8]) -> Result<(), BufError> {
        let mut b = self.bytes.lock().unwrap();
        let end = offset as u64 + data.len() as u64;
        if end > b.len() as u64 {
            return Err(BufError::OutOfRange);
        }
        b[offset as usize..end as usize].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_wraps_around_its_storage() {
        let q = ByteQueue::new(8).unwrap();
        assert_eq!(q.append(&[1, 2, 3, 4, 5, 6]), 6);
        assert_eq!(q.read(5), vec![1, 2, 3, 4, 5]);
        assert_eq!(q.append(&[7, 8, 9, 10, 11, 12, 13]), 7);
        assert_eq!(q.head(), 5);
        assert_eq!(q.tail(), 13);
        assert_eq!(q.read(100), vec![6, 7, 8, 9, 10, 11, 12, 13]);
    }

    #[test]
    fn out_of_order_placement_becomes_readable_after_advance() {
        let q = ByteQueue::new(6).unwrap();
        q.write_at(3, &[4, 5, 6]).unwrap();
        q.write_at(0, &[1, 2, 3]).unwrap();
        assert_eq!(q.read(10), Vec::<u8>::new());
        q.advance_tail(6).unwrap();
        assert_eq!(q.read(10), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(q.write_at(5, &[0; 7]), Err(BufError::OutOfRange));
        assert_eq!(q.write_at(u64::MAX, &[0]), Err(BufError::OutOfRange));
    }

    #[test]
    fn copy_range_and_release_check_bounds() {
        let q = ByteQueue::new(16).unwrap();
        q.append(b"hello world");
        let mut out = Vec::new();
        q.copy_range(6, 5, &mut out).unwrap();
        assert_eq!(out, b"world");
        assert_eq!(q.copy_range(6, 6, &mut out), Err(BufError::OutOfRange));
        assert_eq!(q.copy_range(u64::MAX, 1, &mut out), Err(BufError::OutOfRange));
        q.release(6).unwrap();
        assert_eq!(q.release(5), Err(BufError::OutOfRange));
        assert_eq!(q.release(12), Err(BufError::OutOfRange));
    }

    #[test]
    fn fill_continues_the_pattern_and_digest_covers_what_leaves() {
        let q = ByteQueue::new(64).unwrap();
        q.track_digest();
        assert_eq!(q.fill(7, 10), 10);
        assert_eq!(q.fill(7, 100), 54);
        let mut want = Vec::new();
        pattern(7, 0, 64, &mut want);
        assert_eq!(q.read(30), want[..30].to_vec());
        q.release(50).unwrap();
        let other = ByteQueue::new(64).unwrap();
        assert_eq!(other.splice_from(&q, 64), 14);
        let (d, n) = q.digest();
        assert_eq!(n, 64);
        assert_eq!(d, Sha256::digest(&want).to_vec());
        for (i, b) in want.iter().enumerate() {
            assert_eq!(*b, pattern_byte(7, i as u64));
        }
        assert_eq!(ByteQueue::new(1).unwrap().digest(), (vec![], 0));
    }

    #[test]
    fn pattern_matches_splitmix64_reference() {
        // splitmix64(0) from the reference implementation (Vigna).
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        let mut p = Vec::new();
        pattern(0, 0, 8, &mut p);
        assert_eq!(p, 0xe220_a839_7b1d_cdafu64.to_le_bytes());
    }

    #[test]
    fn buffer_bounds() {
        assert!(matches!(Buffer::new(MAX_BYTES + 1), Err(BufError::NoMemory)));
        let b = Buffer::new(4).unwrap();
        b.write(2, &[9, 9]).unwrap();
        assert_eq!(b.read(0, 4).unwrap(), vec![0, 0, 9, 9]);
        assert_eq!(b.write(3, &[1, 1]), Err(BufError::OutOfRange));
        assert_eq!(b.read(u32::MAX, 1), Err(BufError::OutOfRange));
    }
}
