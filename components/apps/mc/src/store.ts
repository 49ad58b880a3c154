/**
 * The item store behind both protocols: keys to values with flags, an
 * expiry and a CAS number, least recently used items evicted past a memory
 * limit, as memcached keeps them. Pure: the time comes in (`setTime`), so
 * unit tests run it in Node.
 *
 * Values are kept as byte arrays in the app's memory. Keys are Latin-1
 * strings (each byte one character), so any key bytes are a Map key.
 */

/** memcached's default item size limit (-I). */
export const DEFAULT_MAX_ITEM = 1 << 20;
/** Keys are at most 250 bytes (KEY_MAX_LENGTH). */
export const MAX_KEY = 250;
/** An expiry above this many seconds is a Unix time, not an offset (REALTIME_MAXDELTA). */
export const REALTIME_MAXDELTA = 60 * 60 * 24 * 30;
/** Bytes counted per item beyond its key and value (memcached's item header is about this). */
export const ITEM_OVERHEAD = 56;
/** A recently used item is moved to the back of the LRU at most this often (ITEM_UPDATE_INTERVAL). */
const BUMP_SECONDS = 60;
/** The largest value incr and decr work on: 2^64 - 1. */
const U64_MAX = (1n << 64n) - 1n;

export interface Item {
  value: Uint8Array;
  flags: number;
  /** Unix seconds after which the item is gone; 0: never. */
  exptime: number;
  cas: number;
  /** When it was stored (for flush_all with a delay). */
  stored: number;
  /** When it was last moved to the back of the LRU. */
  bumped: number;
}

export type StoreMode = 'set' | 'add' | 'replace' | 'append' | 'prepend';

export type StoreResult =
  | { status: 'stored'; cas: number }
  | { status: 'not-stored' | 'exists' | 'not-found' | 'too-large' | 'no-memory' };

export type DeltaResult =
  | { status: 'ok'; value: bigint; cas: number }
  | { status: 'not-found' | 'non-numeric' | 'exists' | 'no-memory' };

export class Store {
  private items = new Map<string, Item>();
  private bytes = 0;
  private nextCas = 1;
  /** Seconds (Unix time) as the caller last said. */
  private now = 0;
  /** flush_all with a delay: items stored at or before this die once it passes. */
  private flushAt = 0;
  readonly counters = {
    evictions: 0,
    expired: 0,
    total_items: 0,
    get_hits: 0,
    get_misses: 0,
    get_expired: 0,
    get_flushed: 0,
    delete_hits: 0,
    delete_misses: 0,
    incr_hits: 0,
    incr_misses: 0,
    decr_hits: 0,
    decr_misses: 0,
    cas_hits: 0,
    cas_misses: 0,
    cas_badval: 0,
    touch_hits: 0,
    touch_misses: 0,
  };

  constructor(
    readonly limitBytes = 64 << 20,
    readonly maxItem = DEFAULT_MAX_ITEM,
  ) {}

  setTime(unixSeconds: number): void {
    this.now = Math.floor(unixSeconds);
  }

  get time(): number {
    return this.now;
  }

  get currItems(): number {
    return this.items.size;
  }

  get currBytes(): number {
    return this.bytes;
  }

  /**
   * An expiry as the protocols give it, as a Unix time: 0 never; up to
   * 30 days an offset from now; more a Unix time; negative already gone.
   */
  expiry(exptime: number): number {
    if (exptime === 0) return 0;
    if (exptime < 0) return -1; // before any time: expired at once
    if (exptime <= REALTIME_MAXDELTA) return this.now + exptime;
    return exptime;
  }

  private dead(it: Item): 'expired' | 'flushed' | null {
    if (it.exptime !== 0 && it.exptime <= this.now) return 'expired';
    if (this.flushAt !== 0 && this.flushAt <= this.now && it.stored <= this.flushAt) return 'flushed';
    return null;
  }

  /** The live item under `key`, or null (an expired one is dropped). */
  peek(key: string): Item | null {
    const it = this.items.get(key);
    if (!it) return null;
    const why = this.dead(it);
    if (why) {
      this.unlink(key, it);
      if (why === 'expired') this.counters.expired++;
      return null;
    }
    return it;
  }

  /** A read: `peek` that counts hits and misses and keeps the LRU order. */
  get(key: string): Item | null {
    const it = this.items.get(key);
    if (it) {
      const why = this.dead(it);
      if (why) {
        this.unlink(key, it);
        if (why === 'expired') {
          this.counters.expired++;
          this.counters.get_expired++;
        } else this.counters.get_flushed++;
        this.counters.get_misses++;
        return null;
      }
      this.counters.get_hits++;
      this.bump(key, it);
      return it;
    }
    this.counters.get_misses++;
    return null;
  }

  private bump(key: string, it: Item): void {
    if (this.now - it.bumped < BUMP_SECONDS) return;
    it.bumped = this.now;
    this.items.delete(key);
    this.items.set(key, it);
  }

  private unlink(key: string, it: Item): void {
    this.items.delete(key);
    this.bytes -= key.length + it.value.length + ITEM_OVERHEAD;
  }

  private link(key: string, it: Item): boolean {
    const size = key.length + it.value.length + ITEM_OVERHEAD;
    const old = this.items.get(key);
    if (old) this.unlink(key, old);
    // Evict from the front (least recently used) until the item fits.
    if (this.bytes + size > this.limitBytes) {
      for (const [k, v] of this.items) {
        if (this.bytes + size <= this.limitBytes) break;
        this.unlink(k, v);
        if (this.dead(v)) this.counters.expired++;
        else this.counters.evictions++;
      }
    }
    if (this.bytes + size > this.limitBytes) return false;
    this.items.set(key, it);
    this.bytes += size;
    this.counters.total_items++;
    return true;
  }

  /**
   * set, add, replace, append, prepend; `cas` nonzero makes it a
   * compare-and-swap. The value is kept as given (the caller copies it
   * out of its input buffer).
   */
  store(mode: StoreMode, key: string, value: Uint8Array, flags: number, exptime: number, cas = 0): StoreResult {
    const old = this.peek(key);
    if (cas !== 0) {
      if (!old) {
        this.counters.cas_misses++;
        return { status: 'not-found' };
      }
      if (old.cas !== cas) {
        this.counters.cas_badval++;
        return { status: 'exists' };
      }
      this.counters.cas_hits++;
    }
    let data = value;
    switch (mode) {
      case 'add':
        if (old) {
          // memcached moves an item an add failed on to the front.
          this.bump(key, old);
          return { status: 'not-stored' };
        }
        break;
      case 'replace':
        if (!old) return { status: 'not-stored' };
        break;
      case 'append':
      case 'prepend': {
        if (!old) return { status: 'not-stored' };
        data = new Uint8Array(old.value.length + value.length);
        if (mode === 'append') {
          data.set(old.value);
          data.set(value, old.value.length);
        } else {
          data.set(value);
          data.set(old.value, value.length);
        }
        flags = old.flags;
        break;
      }
      case 'set':
        break;
    }
    if (data.length > this.maxItem) return { status: 'too-large' };
    const it: Item = {
      value: data,
      flags: flags >>> 0,
      exptime: mode === 'append' || mode === 'prepend' ? old!.exptime : this.expiry(exptime),
      cas: this.nextCas++,
      stored: this.now,
      bumped: this.now,
    };
    if (!this.link(key, it)) return { status: 'no-memory' };
    return { status: 'stored', cas: it.cas };
  }

  /** delete; a nonzero `cas` must match. */
  delete(key: string, cas = 0): 'deleted' | 'not-found' | 'exists' {
    const it = this.peek(key);
    if (!it) {
      this.counters.delete_misses++;
      return 'not-found';
    }
    if (cas !== 0 && it.cas !== cas) return 'exists';
    this.unlink(key, it);
    this.counters.delete_hits++;
    return 'deleted';
  }

  /**
   * incr or decr by `delta` (decr stops at 0, incr wraps at 2^64). A
   * missing item is created with `initial` when it is given (the binary
   * protocol), else not found.
   */
  delta(key: string, incr: boolean, delta: bigint, initial: bigint | null, exptime: number, cas = 0): DeltaResult {
    const it = this.peek(key);
    const c = this.counters;
    if (!it) {
      if (incr) c.incr_misses++;
      else c.decr_misses++;
      if (initial === null) return { status: 'not-found' };
      const value = initial & U64_MAX;
      const r = this.store('set', key, ascii(value.toString()), 0, exptime);
      if (r.status !== 'stored') return { status: 'no-memory' };
      return { status: 'ok', value, cas: r.cas };
    }
    if (cas !== 0 && it.cas !== cas) return { status: 'exists' };
    const current = parseU64(it.value);
    if (current === null) return { status: 'non-numeric' };
    if (incr) c.incr_hits++;
    else c.decr_hits++;
    const value = incr ? (current + delta) & U64_MAX : current > delta ? current - delta : 0n;
    const next: Item = { ...it, value: ascii(value.toString()), cas: this.nextCas++, stored: this.now };
    if (!this.link(key, next)) return { status: 'no-memory' };
    return { status: 'ok', value, cas: next.cas };
  }

  /** touch: a new expiry for a live item. */
  touch(key: string, exptime: number): Item | null {
    const it = this.peek(key);
    if (!it) {
      this.counters.touch_misses++;
      return null;
    }
    this.counters.touch_hits++;
    it.exptime = this.expiry(exptime);
    return it;
  }

  /** flush_all: every item gone now, or those stored up to `delay` seconds from now once that time comes. */
  flush(delay = 0): void {
    if (delay <= 0) {
      this.items.clear();
      this.bytes = 0;
      this.flushAt = 0;
      return;
    }
    this.flushAt = this.expiry(delay);
  }
}

export function ascii(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}

/** A value of decimal digits (at most 20, the u64 range), as memcached's incr reads it; null if it is not one. */
export function parseU64(b: Uint8Array): bigint | null {
  // memcached's safe_strtoull takes trailing spaces (an incr that shrank a
  // value in place left them) and nothing else.
  let end = b.length;
  while (end > 0 && b[end - 1] === 0x20) end--;
  if (end === 0 || end > 20) return null;
  let v = 0n;
  for (let i = 0; i < end; i++) {
    const d = b[i] - 48;
    if (d < 0 || d > 9) return null;
    v = v * 10n + BigInt(d);
  }
  return v > U64_MAX ? null : v;
}
