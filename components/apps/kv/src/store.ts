/**
 * The keyspace: strings and lists under byte-string keys, with expiry
 * times, as one Redis database. Pure code with an injected clock
 * (milliseconds), so tests move time by hand.
 *
 * Expiry is Redis's: lazy (a key past its time is deleted when touched)
 * plus an active sweep (`expireSome`) the server runs between events.
 * Memory is accounted in bytes (keys, values and a fixed overhead per
 * entry and per list element), so writes can be refused above
 * `maxmemory` as Redis refuses them under the noeviction policy.
 */

/**
 * A double-ended queue of byte strings (a ring buffer that grows). Its
 * arrays are filled when made: QuickJS keeps a dense array fast and makes
 * one with holes a slower object.
 */
export class Deque {
  private items: (Uint8Array | undefined)[] = new Array(8).fill(undefined);
  private head = 0;
  length = 0;
  /** Bytes of the elements, for memory accounting. */
  bytes = 0;

  private grow(): void {
    const cap = this.items.length;
    const next: (Uint8Array | undefined)[] = new Array(cap * 2).fill(undefined);
    for (let i = 0; i < this.length; i++) next[i] = this.items[(this.head + i) & (cap - 1)];
    this.items = next;
    this.head = 0;
  }

  pushFront(v: Uint8Array): void {
    if (this.length === this.items.length) this.grow();
    this.head = (this.head - 1) & (this.items.length - 1);
    this.items[this.head] = v;
    this.length++;
    this.bytes += v.length;
  }

  pushBack(v: Uint8Array): void {
    if (this.length === this.items.length) this.grow();
    this.items[(this.head + this.length) & (this.items.length - 1)] = v;
    this.length++;
    this.bytes += v.length;
  }

  popFront(): Uint8Array | undefined {
    if (this.length === 0) return undefined;
    const v = this.items[this.head]!;
    this.items[this.head] = undefined;
    this.head = (this.head + 1) & (this.items.length - 1);
    this.length--;
    this.bytes -= v.length;
    this.shrink();
    return v;
  }

  popBack(): Uint8Array | undefined {
    if (this.length === 0) return undefined;
    const at = (this.head + this.length - 1) & (this.items.length - 1);
    const v = this.items[at]!;
    this.items[at] = undefined;
    this.length--;
    this.bytes -= v.length;
    this.shrink();
    return v;
  }

  /** Element `i` from the front, 0 <= i < length. */
  at(i: number): Uint8Array {
    return this.items[(this.head + i) & (this.items.length - 1)]!;
  }

  private shrink(): void {
    if (this.items.length > 64 && this.length < this.items.length / 4) {
      const cap = this.items.length / 2;
      const next: (Uint8Array | undefined)[] = new Array(cap).fill(undefined);
      for (let i = 0; i < this.length; i++) next[i] = this.items[(this.head + i) & (this.items.length - 1)];
      this.items = next;
      this.head = 0;
    }
  }
}

export type Value = Uint8Array | Deque;

export interface Entry {
  v: Value;
  /** Absolute expiry time in ms; 0 for none. */
  exp: number;
}

/**
 * Accounting overhead of one key: the Map slot, the entry, the key string
 * and its value's byte array. Measured in QuickJS (64-bit build): a key
 * of 10 bytes with a 3-byte value takes about 640 bytes.
 */
export const ENTRY_OVERHEAD = 600;
/** Accounting overhead of one list element (a byte array and its slot: about 400 bytes). */
export const ELEMENT_OVERHEAD = 400;

export class Store {
  private map = new Map<string, Entry>();
  /** Keys with an expiry time, for the active sweep. */
  private volatile = new Set<string>();
  private sweep: Iterator<string> | null = null;
  /** Bytes accounted to the data. */
  used = 0;
  expiredKeys = 0;

  constructor(readonly now: () => number = Date.now) {}

  get size(): number {
    return this.map.size;
  }

  get expires(): number {
    return this.volatile.size;
  }

  /** The live entry of `key`, deleting it first if it has expired. */
  lookup(key: string): Entry | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (e.exp !== 0 && e.exp <= this.now()) {
      this.delete(key);
      this.expiredKeys++;
      return undefined;
    }
    return e;
  }

  /** Put a value (replacing any), with an expiry time or none. */
  set(key: string, v: Value, exp = 0): Entry {
    const old = this.map.get(key);
    if (old) this.used -= sizeOf(key, old.v);
    const e: Entry = { v, exp };
    this.map.set(key, e);
    this.used += sizeOf(key, v);
    if (exp !== 0) this.volatile.add(key);
    else if (old && old.exp !== 0) this.volatile.delete(key);
    return e;
  }

  /**
   * Put a value under a key whose live entry (or undefined) the caller has
   * just looked up: reuses the entry, so the map is not searched again.
   */
  put(key: string, old: Entry | undefined, v: Value, exp = 0): void {
    if (old === undefined) {
      this.set(key, v, exp);
      return;
    }
    this.used += sizeOf(key, v) - sizeOf(key, old.v);
    old.v = v;
    if (exp !== old.exp) this.setExpire(key, old, exp);
  }

  /** Replace a string value in place, keeping the expiry time. */
  replaceValue(key: string, e: Entry, v: Uint8Array): void {
    this.used += v.length - (e.v as Uint8Array).length;
    e.v = v;
  }

  setExpire(key: string, e: Entry, exp: number): void {
    e.exp = exp;
    if (exp !== 0) this.volatile.add(key);
    else this.volatile.delete(key);
  }

  delete(key: string): boolean {
    const e = this.map.get(key);
    if (e === undefined) return false;
    this.map.delete(key);
    this.used -= sizeOf(key, e.v);
    if (e.exp !== 0) this.volatile.delete(key);
    return true;
  }

  /** Account a list's change in size (elements added or taken). */
  listChanged(deltaBytes: number, deltaElements: number): void {
    this.used += deltaBytes + deltaElements * ELEMENT_OVERHEAD;
  }

  flush(): void {
    this.map = new Map();
    this.volatile = new Set();
    this.sweep = null;
    this.used = 0;
  }

  /** Live keys (expired ones are skipped, not deleted). */
  *keys(): IterableIterator<string> {
    const now = this.now();
    for (const [k, e] of this.map) if (e.exp === 0 || e.exp > now) yield k;
  }

  /**
   * The active sweep: look at up to `budget` keys with an expiry time and
   * delete those past it. Returns how many were deleted.
   */
  expireSome(budget = 200): number {
    if (this.volatile.size === 0) return 0;
    const now = this.now();
    let deleted = 0;
    const doomed: string[] = [];
    for (let i = 0; i < budget; i++) {
      if (this.sweep === null) this.sweep = this.volatile.values();
      const r = this.sweep.next();
      if (r.done) {
        this.sweep = null;
        if (i === 0 || this.volatile.size <= budget) break;
        continue;
      }
      const e = this.map.get(r.value);
      if (e && e.exp !== 0 && e.exp <= now) doomed.push(r.value);
    }
    for (const k of doomed) {
      if (this.delete(k)) {
        deleted++;
        this.expiredKeys++;
      }
    }
    return deleted;
  }
}

function sizeOf(key: string, v: Value): number {
  if (v instanceof Uint8Array) return ENTRY_OVERHEAD + key.length + v.length;
  return ENTRY_OVERHEAD + key.length + v.bytes + v.length * ELEMENT_OVERHEAD;
}
