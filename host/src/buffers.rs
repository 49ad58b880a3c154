//! Host-owned memory for components: `libretto:io/buffers`.
//!
//! A [`ByteQueue`] is a window onto a byte stream (a socket's send or
//! receive buffer) addressed by absolute `u64` stream offsets; a [`Buffer`]
//! is a fixed region for block I/O. Both keep their bytes in the host so a
//! JavaScript component moves offsets, not payload.

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
            inner: Mutex::new(QueueState { buf: vec![0u8; capacity as usize].into_boxed_slice(), head: 0, tail: 0 }),
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
        s.head += n as u64;
        out
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
        s.head = to;
        Ok(())
    }
}

/// A fixed-size region of host memory. Cloning shares the memory, so an
/// in-flight block command keeps it alive after the component drops it.
#[derive(Clone)]
pub struct Buffer {
    pub bytes: Arc<Mutex<Vec<u8>>>,
}

impl Buffer {
    pub fn new(len: u32) -> Result<Buffer, BufError> {
        if len > MAX_BYTES {
            return Err(BufError::NoMemory);
        }
        Ok(Buffer { bytes: Arc::new(Mutex::new(vec![0u8; len as usize])) })
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
    fn buffer_bounds() {
        assert!(matches!(Buffer::new(MAX_BYTES + 1), Err(BufError::NoMemory)));
        let b = Buffer::new(4).unwrap();
        b.write(2, &[9, 9]).unwrap();
        assert_eq!(b.read(0, 4).unwrap(), vec![0, 0, 9, 9]);
        assert_eq!(b.write(3, &[1, 1]), Err(BufError::OutOfRange));
        assert_eq!(b.read(u32::MAX, 1), Err(BufError::OutOfRange));
    }
}
