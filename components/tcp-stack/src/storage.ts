/**
 * Byte stores: a socket's send and receive buffers.
 *
 * In a component these are host byte queues (`libretto:io/buffers`), so
 * payload stays in the host; in unit tests `MemoryStore` stands in for one.
 * Positions are stream offsets (numbers below 2^53): the store holds
 * [head, tail) and has room up to head + capacity. The stack keeps its own
 * copy of head and tail (it makes every change), so it never asks the host.
 */
export interface ByteStore {
  readonly capacity: number;
  /** What a transmit chunk or a placement names: the host's queue resource (or the store itself in tests). */
  readonly handle: object;
  /** Append at the tail; returns how many bytes fitted. */
  append(data: Uint8Array): number;
  /** Move up to `len` bytes from the head of `src` to our tail; returns how many. */
  splice(src: ByteStore, len: number): number;
  /** Copy out and remove up to `max` bytes from the head. */
  read(max: number): Uint8Array;
  /** Copy out [at, at + len) without removing it. */
  peek(at: number, len: number): Uint8Array;
  /** Write bytes inside the window without moving the tail. */
  writeAt(at: number, data: Uint8Array): void;
  /** Make bytes up to `to` readable. */
  advanceTail(to: number): void;
  /** Drop bytes before `to`. */
  release(to: number): void;
}

/** A byte store in JavaScript memory, for unit tests and the Node harness. */
export class MemoryStore implements ByteStore {
  private buf: Uint8Array;
  head = 0;
  tail = 0;

  constructor(readonly capacity: number) {
    this.buf = new Uint8Array(capacity);
  }

  get handle(): object {
    return this;
  }

  private put(at: number, data: Uint8Array): void {
    const cap = this.capacity;
    if (cap === 0) return;
    for (let i = 0; i < data.length; i++) this.buf[(at + i) % cap] = data[i];
  }

  private get(at: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    const cap = this.capacity;
    for (let i = 0; i < len; i++) out[i] = this.buf[(at + i) % cap];
    return out;
  }

  append(data: Uint8Array): number {
    const n = Math.min(data.length, this.head + this.capacity - this.tail);
    this.put(this.tail, data.subarray(0, n));
    this.tail += n;
    return n;
  }

  splice(src: ByteStore, len: number): number {
    const s = src as MemoryStore;
    const n = Math.min(len, s.tail - s.head, this.head + this.capacity - this.tail);
    this.append(s.read(n));
    return n;
  }

  read(max: number): Uint8Array {
    const n = Math.min(max, this.tail - this.head);
    const out = this.get(this.head, n);
    this.head += n;
    return out;
  }

  peek(at: number, len: number): Uint8Array {
    if (at < this.head || at + len > this.tail) throw new RangeError(`peek [${at}, ${at + len}) outside [${this.head}, ${this.tail})`);
    return this.get(at, len);
  }

  writeAt(at: number, data: Uint8Array): void {
    if (at < this.head || at + data.length > this.head + this.capacity) {
      throw new RangeError(`write-at [${at}, ${at + data.length}) outside the window at ${this.head}`);
    }
    this.put(at, data);
  }

  advanceTail(to: number): void {
    if (to < this.tail || to > this.head + this.capacity) throw new RangeError(`advance-tail to ${to} from ${this.tail}`);
    this.tail = to;
  }

  release(to: number): void {
    if (to < this.head || to > this.tail) throw new RangeError(`release to ${to} outside [${this.head}, ${this.tail}]`);
    this.head = to;
  }
}
