/**
 * A growable byte buffer that replies are written into, so a batch of
 * replies leaves in one write. Pure: no imports.
 */
export class Sink {
  buf: Uint8Array;
  len = 0;

  constructor(initial = 16384) {
    this.buf = new Uint8Array(initial);
  }

  /** Room for `n` more bytes. */
  reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.buf.subarray(0, this.len));
    this.buf = bigger;
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.len++] = v;
  }

  u16(v: number): void {
    this.reserve(2);
    this.buf[this.len++] = (v >>> 8) & 255;
    this.buf[this.len++] = v & 255;
  }

  u32(v: number): void {
    this.reserve(4);
    this.buf[this.len++] = (v >>> 24) & 255;
    this.buf[this.len++] = (v >>> 16) & 255;
    this.buf[this.len++] = (v >>> 8) & 255;
    this.buf[this.len++] = v & 255;
  }

  /** A u64 given as a number below 2^53. */
  u64(v: number): void {
    this.u32(Math.floor(v / 4294967296));
    this.u32(v >>> 0);
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** Latin-1 text (the text protocol's replies, which are ASCII). */
  ascii(s: string): void {
    this.reserve(s.length);
    for (let i = 0; i < s.length; i++) this.buf[this.len++] = s.charCodeAt(i) & 255;
  }

  /** The bytes written so far (a view, valid until the next write). */
  view(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }

  /** Drop the first `n` bytes (they were sent). */
  consume(n: number): void {
    if (n >= this.len) {
      this.len = 0;
      return;
    }
    this.buf.copyWithin(0, n, this.len);
    this.len -= n;
  }
}
