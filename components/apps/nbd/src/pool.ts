/**
 * In-memory files (memfds) for request data, reused by size class.
 *
 * Every READ or WRITE needs a region of an in-memory file: block reads
 * fill it and sendfile sends it; a socket's bytes are spliced into it and
 * block writes take them from it. Each request gets a memfd of its own
 * (so concurrent requests never share a host buffer), its size rounded up
 * to a power of two from 4 KiB to 32 MiB; a finished one goes back to a
 * free list of its class for the next request of that size. The bytes of
 * all memfds, in use or idle, stay within a budget: idle ones are closed
 * to make room, and when none can be, `alloc` returns null and the caller
 * waits for a `release`.
 *
 * Pure apart from the two functions it is given, so it is unit-tested in
 * Node.
 */

export interface Buf {
  fd: number;
  /** Bytes of the memfd (its size class). */
  size: number;
}

export const MIN_CLASS = 4096;

/** The size class for `len` bytes: the next power of two, at least 4 KiB. */
export function sizeClass(len: number): number {
  let c = MIN_CLASS;
  while (c < len) c *= 2;
  return c;
}

export class BufferPool {
  /** Idle memfds by size class. */
  private idle = new Map<number, Buf[]>();
  /** Bytes of every memfd this pool holds open, idle or in use. */
  total = 0;
  inUse = 0;
  created = 0;
  reused = 0;
  evicted = 0;

  constructor(
    readonly budget: number,
    private readonly create: (len: number) => number,
    private readonly destroy: (fd: number) => void,
    /** Idle memfds kept per size class. */
    private readonly keepPerClass = 64,
  ) {}

  /** A memfd of at least `len` bytes, or null if the budget is spent on memfds in use. */
  alloc(len: number): Buf | null {
    const size = sizeClass(len);
    const list = this.idle.get(size);
    if (list && list.length > 0) {
      const b = list.pop()!;
      this.inUse += size;
      this.reused++;
      return b;
    }
    if (this.total + size > this.budget) this.evict(this.total + size - this.budget);
    if (this.total + size > this.budget) return null;
    const fd = this.create(size);
    this.total += size;
    this.inUse += size;
    this.created++;
    return { fd, size };
  }

  /** Give a memfd back (its data is no longer needed). */
  release(b: Buf): void {
    this.inUse -= b.size;
    let list = this.idle.get(b.size);
    if (!list) this.idle.set(b.size, (list = []));
    if (list.length >= this.keepPerClass) {
      this.drop(b);
      return;
    }
    list.push(b);
  }

  /** Bytes held by idle memfds. */
  idleBytes(): number {
    return this.total - this.inUse;
  }

  /** Close idle memfds, largest first, until `need` bytes are freed or none is left. */
  private evict(need: number): void {
    const classes = [...this.idle.keys()].sort((a, b) => b - a);
    let freed = 0;
    for (const c of classes) {
      const list = this.idle.get(c)!;
      while (list.length > 0 && freed < need) {
        this.drop(list.pop()!);
        freed += c;
        this.evicted++;
      }
      if (freed >= need) return;
    }
  }

  private drop(b: Buf): void {
    this.total -= b.size;
    this.destroy(b.fd);
  }
}
