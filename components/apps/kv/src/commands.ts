/**
 * The commands: each takes its arguments as bytes and writes its reply,
 * with Redis's reply for every error (arity, syntax, WRONGTYPE, integers
 * out of range, unknown commands). Pure code: the store's clock is
 * injected, so tests run every command in Node with time moved by hand.
 */
import { Deque, Store, type Entry } from './store.ts';
import { Writer, type Command } from './resp.ts';

export const VERSION = '7.0.0';

export interface Config {
  port: number;
  /** Bytes of data above which writes are refused (noeviction); 0 for no limit. */
  maxmemory: number;
  /** proto-max-bulk-len. */
  maxBulk: number;
}

/** Per-connection state that commands see. */
export interface Session {
  id: number;
  /** Set by QUIT: reply, then close. */
  quit: boolean;
  name: Uint8Array | null;
}

export const WRONGTYPE = 'WRONGTYPE Operation against a key holding the wrong kind of value';
export const NOT_INTEGER = 'ERR value is not an integer or out of range';
export const SYNTAX = 'ERR syntax error';
export const OOM = "OOM command not allowed when used memory > 'maxmemory'.";

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);

/** A key's bytes as a map key (Latin-1: one char per byte, so every byte string is distinct). */
export function keyOf(b: Uint8Array): string {
  // fromCharCode.apply takes the typed array as it is (one call, not one per byte).
  if (b.length <= 4096) return String.fromCharCode.apply(null, b as unknown as number[]);
  let s = '';
  for (let i = 0; i < b.length; i += 4096) s += String.fromCharCode.apply(null, b.subarray(i, Math.min(b.length, i + 4096)) as unknown as number[]);
  return s;
}

export function bytesOf(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
  return b;
}

/**
 * A signed 64-bit integer as Redis's string2ll reads it (no spaces, no
 * '+', no leading zeros, at most 20 characters): a number when it is
 * exact as one, a bigint otherwise; null if it is not an integer in range.
 */
export function parseInt64(b: Uint8Array): number | bigint | null {
  const n = b.length;
  if (n === 0 || n > 20) return null;
  if (n === 1 && b[0] === 48) return 0;
  let i = 0;
  let neg = false;
  if (b[0] === 45) {
    neg = true;
    i = 1;
    if (n === 1) return null;
  }
  if (b[i] < 49 || b[i] > 57) return null;
  let v = 0;
  for (let j = i; j < n; j++) {
    const d = b[j] - 48;
    if (d < 0 || d > 9) return null;
    v = v * 10 + d;
  }
  if (v <= Number.MAX_SAFE_INTEGER) return neg ? -v : v;
  let big = 0n;
  for (let j = i; j < n; j++) big = big * 10n + BigInt(b[j] - 48);
  if (neg) big = -big;
  if (big > INT64_MAX || big < INT64_MIN) return null;
  return big;
}

/** a + b in int64, or null on overflow. */
function add64(a: number | bigint, b: number | bigint): number | bigint | null {
  if (typeof a === 'number' && typeof b === 'number') {
    const r = a + b;
    if (Number.isSafeInteger(r)) return r;
  }
  const r = BigInt(a) + BigInt(b);
  if (r > INT64_MAX || r < INT64_MIN) return null;
  return Number.isSafeInteger(Number(r)) && BigInt(Number(r)) === r ? Number(r) : r;
}

function lower(b: Uint8Array): string {
  return keyOf(b.length > 64 ? b.subarray(0, 64) : b).toLowerCase();
}

function eq(b: Uint8Array, word: string): boolean {
  if (b.length !== word.length) return false;
  for (let i = 0; i < b.length; i++) {
    let c = b[i];
    if (c >= 97 && c <= 122) c -= 32;
    if (c !== word.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Glob-style matching as Redis's stringmatchlen: `*`, `?`, `[abc]`,
 * `[^a-z]` and `\` escapes.
 */
export function globMatch(p: string, s: string, nocase = false): boolean {
  if (nocase) {
    p = p.toLowerCase();
    s = s.toLowerCase();
  }
  const m = (pi: number, si: number, depth: number): boolean => {
    if (depth > 1000) return false;
    while (pi < p.length) {
      const c = p[pi];
      if (c === '*') {
        while (p[pi + 1] === '*') pi++;
        if (pi + 1 === p.length) return true;
        for (let k = si; k <= s.length; k++) if (m(pi + 1, k, depth + 1)) return true;
        return false;
      }
      if (si >= s.length) return false;
      if (c === '?') {
        pi++;
        si++;
        continue;
      }
      if (c === '[') {
        let j = pi + 1;
        const not = p[j] === '^';
        if (not) j++;
        let hit = false;
        while (j < p.length && p[j] !== ']') {
          if (p[j] === '\\' && j + 1 < p.length) {
            j++;
            if (p[j] === s[si]) hit = true;
          } else if (p[j + 1] === '-' && j + 2 < p.length && p[j + 2] !== ']') {
            let a = p[j];
            let b = p[j + 2];
            if (a > b) [a, b] = [b, a];
            if (s[si] >= a && s[si] <= b) hit = true;
            j += 2;
          } else if (p[j] === s[si]) hit = true;
          j++;
        }
        if (not) hit = !hit;
        if (!hit) return false;
        pi = j + 1;
        si++;
        continue;
      }
      if (c === '\\' && pi + 1 < p.length) pi++;
      if (p[pi] !== s[si]) return false;
      pi++;
      si++;
    }
    return si === s.length;
  };
  return m(0, 0, 0);
}

type Handler = (kv: Kv, a: Command, w: Writer, s: Session) => void;

interface Spec {
  name: string;
  /** Redis's arity: N exactly, or -N for at least N (the name counts). */
  arity: number;
  fn: Handler;
  /** Refused with -OOM above maxmemory. */
  denyoom?: boolean;
}

export interface Stats {
  commands: number;
  errors: number;
  connections: number;
}

export class Kv {
  readonly store: Store;
  readonly stats: Stats = { commands: 0, errors: 0, connections: 0 };

  constructor(
    readonly config: Config,
    now: () => number = Date.now,
  ) {
    this.store = new Store(now);
  }

  /** Run one command and write its reply. */
  exec(a: Command, w: Writer, s: Session): void {
    this.stats.commands++;
    const raw = a[0].length <= 64 ? keyOf(a[0]) : '';
    // Names as clients send them (upper or lower case) are found without lower-casing.
    let spec = UPPER.get(raw) ?? COMMANDS.get(raw);
    const name = spec ? spec.name : raw.toLowerCase();
    if (spec === undefined) spec = COMMANDS.get(name);
    if (spec === undefined) {
      let args = '';
      for (let i = 1; i < a.length && args.length < 1024; i++) args += `'${keyOf(a[i].subarray(0, 128))}' `;
      this.stats.errors++;
      w.error(`ERR unknown command '${keyOf(a[0].subarray(0, 128))}', with args beginning with: ${args}`);
      return;
    }
    if ((spec.arity > 0 && a.length !== spec.arity) || a.length < -spec.arity) {
      this.stats.errors++;
      w.error(`ERR wrong number of arguments for '${name}' command`);
      return;
    }
    if (spec.denyoom && this.config.maxmemory > 0 && this.store.used > this.config.maxmemory) {
      this.stats.errors++;
      w.error(OOM);
      return;
    }
    const before = w.len;
    spec.fn(this, a, w, s);
    if (w.len > before && w.buf[before] === 45 /* - */) this.stats.errors++;
  }

  /** The live string under `key`, WRONGTYPE for a list (false), or undefined. */
  private str(key: string, w: Writer): Entry | undefined | false {
    const e = this.store.lookup(key);
    if (e && !(e.v instanceof Uint8Array)) {
      w.error(WRONGTYPE);
      return false;
    }
    return e;
  }

  get(a: Command, w: Writer): void {
    const e = this.str(keyOf(a[1]), w);
    if (e === false) return;
    w.bulk(e ? (e.v as Uint8Array) : null);
  }

  set(a: Command, w: Writer): void {
    let nx = false;
    let xx = false;
    let get = false;
    let keepttl = false;
    let exp = 0;
    let expSet = false;
    const now = a.length > 3 ? this.store.now() : 0;
    for (let i = 3; i < a.length; i++) {
      const o = a[i];
      const hasNext = i + 1 < a.length;
      if (eq(o, 'NX') && !xx) nx = true;
      else if (eq(o, 'XX') && !nx) xx = true;
      else if (eq(o, 'GET')) get = true;
      else if (eq(o, 'KEEPTTL') && !expSet) keepttl = true;
      else if ((eq(o, 'EX') || eq(o, 'PX') || eq(o, 'EXAT') || eq(o, 'PXAT')) && !keepttl && !expSet && hasNext) {
        const v = parseInt64(a[++i]);
        if (v === null || typeof v === 'bigint') {
          w.error(v === null ? NOT_INTEGER : "ERR invalid expire time in 'set' command");
          return;
        }
        if (v <= 0) {
          w.error("ERR invalid expire time in 'set' command");
          return;
        }
        const secs = eq(o, 'EX') || eq(o, 'EXAT');
        const ms = secs ? v * 1000 : v;
        if (!Number.isSafeInteger(ms)) {
          w.error("ERR invalid expire time in 'set' command");
          return;
        }
        exp = eq(o, 'EX') || eq(o, 'PX') ? now + ms : ms;
        expSet = true;
      } else {
        w.error(SYNTAX);
        return;
      }
    }
    const key = keyOf(a[1]);
    const old = this.store.lookup(key);
    if (get && old && !(old.v instanceof Uint8Array)) {
      w.error(WRONGTYPE);
      return;
    }
    const oldValue = old ? (old.v as Uint8Array) : null;
    if ((nx && old) || (xx && !old)) {
      if (get) w.bulk(oldValue);
      else w.bulk(null);
      return;
    }
    const keep = keepttl && old ? old.exp : 0;
    if (expSet && exp <= now) {
      // An absolute time already past: the key is set and gone at once.
      this.store.delete(key);
    } else {
      this.store.put(key, old, a[2], expSet ? exp : keep);
    }
    if (get) w.bulk(oldValue);
    else w.raw(OK);
  }

  incrBy(a: Command, w: Writer, by: number | bigint): void {
    const key = keyOf(a[1]);
    const e = this.str(key, w);
    if (e === false) return;
    let cur: number | bigint = 0;
    if (e) {
      const v = parseInt64(e.v as Uint8Array);
      if (v === null) {
        w.error(NOT_INTEGER);
        return;
      }
      cur = v;
    }
    const r = add64(cur, by);
    if (r === null) {
      w.error('ERR increment or decrement would overflow');
      return;
    }
    const bytes = bytesOf(String(r));
    if (e) this.store.replaceValue(key, e, bytes);
    else this.store.set(key, bytes);
    w.integer(r);
  }

  /** The list under `key` (created if `create`), WRONGTYPE (false), or undefined. */
  private list(key: string, w: Writer, create: boolean): Deque | undefined | false {
    const e = this.store.lookup(key);
    if (e) {
      if (e.v instanceof Deque) return e.v;
      w.error(WRONGTYPE);
      return false;
    }
    if (!create) return undefined;
    const d = new Deque();
    this.store.set(key, d);
    return d;
  }

  push(a: Command, w: Writer, front: boolean): void {
    const key = keyOf(a[1]);
    const d = this.list(key, w, true);
    if (!d) return;
    const bytes = d.bytes;
    for (let i = 2; i < a.length; i++) {
      if (front) d.pushFront(a[i]);
      else d.pushBack(a[i]);
    }
    this.store.listChanged(d.bytes - bytes, a.length - 2);
    w.integer(d.length);
  }

  pop(a: Command, w: Writer, front: boolean): void {
    let count = -1;
    if (a.length > 3) {
      w.error(`ERR wrong number of arguments for '${front ? 'lpop' : 'rpop'}' command`);
      return;
    }
    if (a.length === 3) {
      const c = parseInt64(a[2]);
      if (c === null || c < 0) {
        w.error('ERR value is out of range, must be positive');
        return;
      }
      count = Number(c);
    }
    const key = keyOf(a[1]);
    const d = this.list(key, w, false);
    if (d === false) return;
    if (!d) {
      if (count >= 0) w.nullArray();
      else w.bulk(null);
      return;
    }
    const bytes = d.bytes;
    const take = count < 0 ? 1 : Math.min(count, d.length);
    if (count >= 0) w.array(take);
    for (let i = 0; i < take; i++) w.bulk((front ? d.popFront() : d.popBack())!);
    this.store.listChanged(d.bytes - bytes, -take);
    if (d.length === 0) this.store.delete(key);
  }

  lrange(a: Command, w: Writer): void {
    const s0 = parseInt64(a[2]);
    const e0 = parseInt64(a[3]);
    if (s0 === null || e0 === null) {
      w.error(NOT_INTEGER);
      return;
    }
    const d = this.list(keyOf(a[1]), w, false);
    if (d === false) return;
    if (!d) {
      w.array(0);
      return;
    }
    const len = d.length;
    let start = Number(s0);
    let end = Number(e0);
    if (start < 0) start = len + start;
    if (end < 0) end = len + end;
    if (start < 0) start = 0;
    if (start > end || start >= len) {
      w.array(0);
      return;
    }
    if (end >= len) end = len - 1;
    w.array(end - start + 1);
    for (let i = start; i <= end; i++) w.bulk(d.at(i));
  }

  expire(a: Command, w: Writer, unitMs: number, absolute: boolean, name: string): void {
    const v = parseInt64(a[2]);
    if (v === null) {
      w.error(NOT_INTEGER);
      return;
    }
    let nx = false;
    let xx = false;
    let gt = false;
    let lt = false;
    for (let i = 3; i < a.length; i++) {
      if (eq(a[i], 'NX')) nx = true;
      else if (eq(a[i], 'XX')) xx = true;
      else if (eq(a[i], 'GT')) gt = true;
      else if (eq(a[i], 'LT')) lt = true;
      else {
        w.error(`ERR Unsupported option ${keyOf(a[i])}`);
        return;
      }
    }
    if (nx && (xx || gt || lt)) {
      w.error('ERR NX and XX, GT or LT options at the same time are not compatible');
      return;
    }
    if (gt && lt) {
      w.error('ERR GT and LT options at the same time are not compatible');
      return;
    }
    const now = this.store.now();
    const ms = Number(v) * unitMs;
    const when = absolute ? ms : now + ms;
    if (!Number.isSafeInteger(ms) || !Number.isSafeInteger(when)) {
      w.error(`ERR invalid expire time in '${name}' command`);
      return;
    }
    const key = keyOf(a[1]);
    const e = this.store.lookup(key);
    if (!e) {
      w.raw(ZERO);
      return;
    }
    const cur = e.exp === 0 ? Infinity : e.exp;
    if ((nx && e.exp !== 0) || (xx && e.exp === 0) || (gt && !(when > cur)) || (lt && !(when < cur))) {
      w.raw(ZERO);
      return;
    }
    if (when <= now) this.store.delete(key);
    else this.store.setExpire(key, e, when);
    w.raw(ONE);
  }

  ttl(a: Command, w: Writer, ms: boolean): void {
    const e = this.store.lookup(keyOf(a[1]));
    if (!e) w.integer(-2);
    else if (e.exp === 0) w.integer(-1);
    else {
      const left = Math.max(0, e.exp - this.store.now());
      w.integer(ms ? left : Math.floor((left + 500) / 1000));
    }
  }

  configGet(a: Command, w: Writer): void {
    const params: [string, string][] = [
      ['save', ''],
      ['appendonly', 'no'],
      ['maxmemory', String(this.config.maxmemory)],
      ['maxmemory-policy', 'noeviction'],
      ['proto-max-bulk-len', String(this.config.maxBulk)],
      ['databases', '1'],
      ['port', String(this.config.port)],
    ];
    const hits: [string, string][] = [];
    for (let i = 2; i < a.length; i++) {
      const pat = keyOf(a[i]);
      for (const p of params) if (globMatch(pat, p[0], true) && !hits.includes(p)) hits.push(p);
    }
    w.array(hits.length * 2);
    for (const [k, v] of hits) {
      w.bulkString(k);
      w.bulkString(v);
    }
  }

  info(): string {
    const s = this.store;
    const lines = [
      '# Server',
      `redis_version:${VERSION}`,
      'redis_mode:standalone',
      'os:libretto (WebAssembly components)',
      `tcp_port:${this.config.port}`,
      '',
      '# Memory',
      `used_memory:${s.used}`,
      `maxmemory:${this.config.maxmemory}`,
      'maxmemory_policy:noeviction',
      '',
      '# Stats',
      `total_connections_received:${this.stats.connections}`,
      `total_commands_processed:${this.stats.commands}`,
      `expired_keys:${s.expiredKeys}`,
      '',
      '# Keyspace',
    ];
    if (s.size > 0) lines.push(`db0:keys=${s.size},expires=${s.expires},avg_ttl=0`);
    return lines.join('\r\n') + '\r\n';
  }
}

const OK = bytesOf('+OK\r\n');
const PONG = bytesOf('+PONG\r\n');
const ZERO = bytesOf(':0\r\n');
const ONE = bytesOf(':1\r\n');

function incrArg(kv: Kv, a: Command, w: Writer, sign: 1 | -1): void {
  const by = parseInt64(a[2]);
  if (by === null) {
    w.error(NOT_INTEGER);
    return;
  }
  if (sign < 0) {
    if (by === INT64_MIN) {
      w.error('ERR decrement would overflow');
      return;
    }
    kv.incrBy(a, w, typeof by === 'bigint' ? -by : -by);
  } else kv.incrBy(a, w, by);
}

const TABLE: [string, Omit<Spec, 'name'>][] = [
  ['ping', { arity: -1, fn: (_kv, a, w) => (a.length > 2 ? w.error("ERR wrong number of arguments for 'ping' command") : a.length === 2 ? w.bulk(a[1]) : w.raw(PONG)) }],
  ['echo', { arity: 2, fn: (_kv, a, w) => w.bulk(a[1]) }],
  ['get', { arity: 2, fn: (kv, a, w) => kv.get(a, w) }],
  ['set', { arity: -3, denyoom: true, fn: (kv, a, w) => kv.set(a, w) }],
  [
    'setnx',
    {
      arity: 3,
      denyoom: true,
      fn: (kv, a, w) => {
        const key = keyOf(a[1]);
        if (kv.store.lookup(key)) w.raw(ZERO);
        else {
          kv.store.set(key, a[2]);
          w.raw(ONE);
        }
      },
    },
  ],
  [
    'setex',
    {
      arity: 4,
      denyoom: true,
      fn: (kv, a, w) => kv.set([a[0], a[1], a[3], bytesOf('EX'), a[2]], w),
    },
  ],
  [
    'psetex',
    {
      arity: 4,
      denyoom: true,
      fn: (kv, a, w) => kv.set([a[0], a[1], a[3], bytesOf('PX'), a[2]], w),
    },
  ],
  [
    'getset',
    {
      arity: 3,
      denyoom: true,
      fn: (kv, a, w) => kv.set([a[0], a[1], a[2], bytesOf('GET')], w),
    },
  ],
  [
    'append',
    {
      arity: 3,
      denyoom: true,
      fn: (kv, a, w) => {
        const key = keyOf(a[1]);
        const e = kv.store.lookup(key);
        if (e && !(e.v instanceof Uint8Array)) return w.error(WRONGTYPE);
        if (!e) {
          kv.store.set(key, a[2]);
          return w.integer(a[2].length);
        }
        const old = e.v as Uint8Array;
        if (old.length + a[2].length > kv.config.maxBulk) return w.error('ERR string exceeds maximum allowed size (proto-max-bulk-len)');
        const v = new Uint8Array(old.length + a[2].length);
        v.set(old);
        v.set(a[2], old.length);
        kv.store.replaceValue(key, e, v);
        w.integer(v.length);
      },
    },
  ],
  [
    'strlen',
    {
      arity: 2,
      fn: (kv, a, w) => {
        const e = kv.store.lookup(keyOf(a[1]));
        if (e && !(e.v instanceof Uint8Array)) return w.error(WRONGTYPE);
        w.integer(e ? (e.v as Uint8Array).length : 0);
      },
    },
  ],
  [
    'del',
    {
      arity: -2,
      fn: (kv, a, w) => {
        let n = 0;
        for (let i = 1; i < a.length; i++) {
          const key = keyOf(a[i]);
          if (kv.store.lookup(key) && kv.store.delete(key)) n++;
        }
        w.integer(n);
      },
    },
  ],
  [
    'exists',
    {
      arity: -2,
      fn: (kv, a, w) => {
        let n = 0;
        for (let i = 1; i < a.length; i++) if (kv.store.lookup(keyOf(a[i]))) n++;
        w.integer(n);
      },
    },
  ],
  [
    'type',
    {
      arity: 2,
      fn: (kv, a, w) => {
        const e = kv.store.lookup(keyOf(a[1]));
        w.simple(!e ? 'none' : e.v instanceof Uint8Array ? 'string' : 'list');
      },
    },
  ],
  ['incr', { arity: 2, denyoom: true, fn: (kv, a, w) => kv.incrBy(a, w, 1) }],
  ['decr', { arity: 2, denyoom: true, fn: (kv, a, w) => kv.incrBy(a, w, -1) }],
  ['incrby', { arity: 3, denyoom: true, fn: (kv, a, w) => incrArg(kv, a, w, 1) }],
  ['decrby', { arity: 3, denyoom: true, fn: (kv, a, w) => incrArg(kv, a, w, -1) }],
  [
    'mset',
    {
      arity: -3,
      denyoom: true,
      fn: (kv, a, w) => {
        if (a.length % 2 === 0) return w.error("ERR wrong number of arguments for 'mset' command");
        for (let i = 1; i < a.length; i += 2) kv.store.set(keyOf(a[i]), a[i + 1]);
        w.raw(OK);
      },
    },
  ],
  [
    'msetnx',
    {
      arity: -3,
      denyoom: true,
      fn: (kv, a, w) => {
        if (a.length % 2 === 0) return w.error("ERR wrong number of arguments for 'msetnx' command");
        for (let i = 1; i < a.length; i += 2) if (kv.store.lookup(keyOf(a[i]))) return w.raw(ZERO);
        for (let i = 1; i < a.length; i += 2) kv.store.set(keyOf(a[i]), a[i + 1]);
        w.raw(ONE);
      },
    },
  ],
  [
    'mget',
    {
      arity: -2,
      fn: (kv, a, w) => {
        w.array(a.length - 1);
        for (let i = 1; i < a.length; i++) {
          const e = kv.store.lookup(keyOf(a[i]));
          // MGET answers nil for a key of another type, as Redis does.
          w.bulk(e && e.v instanceof Uint8Array ? e.v : null);
        }
      },
    },
  ],
  ['lpush', { arity: -3, denyoom: true, fn: (kv, a, w) => kv.push(a, w, true) }],
  ['rpush', { arity: -3, denyoom: true, fn: (kv, a, w) => kv.push(a, w, false) }],
  ['lpop', { arity: -2, fn: (kv, a, w) => kv.pop(a, w, true) }],
  ['rpop', { arity: -2, fn: (kv, a, w) => kv.pop(a, w, false) }],
  [
    'llen',
    {
      arity: 2,
      fn: (kv, a, w) => {
        const e = kv.store.lookup(keyOf(a[1]));
        if (e && !(e.v instanceof Deque)) return w.error(WRONGTYPE);
        w.integer(e ? (e.v as Deque).length : 0);
      },
    },
  ],
  ['lrange', { arity: 4, fn: (kv, a, w) => kv.lrange(a, w) }],
  [
    'lindex',
    {
      arity: 3,
      fn: (kv, a, w) => {
        const i = parseInt64(a[2]);
        if (i === null) return w.error(NOT_INTEGER);
        const e = kv.store.lookup(keyOf(a[1]));
        if (!e) return w.bulk(null);
        if (!(e.v instanceof Deque)) return w.error(WRONGTYPE);
        let at = Number(i);
        if (at < 0) at += e.v.length;
        w.bulk(at >= 0 && at < e.v.length ? e.v.at(at) : null);
      },
    },
  ],
  ['expire', { arity: -3, fn: (kv, a, w) => kv.expire(a, w, 1000, false, 'expire') }],
  ['pexpire', { arity: -3, fn: (kv, a, w) => kv.expire(a, w, 1, false, 'pexpire') }],
  ['expireat', { arity: -3, fn: (kv, a, w) => kv.expire(a, w, 1000, true, 'expireat') }],
  ['pexpireat', { arity: -3, fn: (kv, a, w) => kv.expire(a, w, 1, true, 'pexpireat') }],
  ['ttl', { arity: 2, fn: (kv, a, w) => kv.ttl(a, w, false) }],
  ['pttl', { arity: 2, fn: (kv, a, w) => kv.ttl(a, w, true) }],
  [
    'persist',
    {
      arity: 2,
      fn: (kv, a, w) => {
        const key = keyOf(a[1]);
        const e = kv.store.lookup(key);
        if (!e || e.exp === 0) return w.raw(ZERO);
        kv.store.setExpire(key, e, 0);
        w.raw(ONE);
      },
    },
  ],
  ['dbsize', { arity: 1, fn: (kv, _a, w) => w.integer(kv.store.size) }],
  [
    'keys',
    {
      arity: 2,
      fn: (kv, a, w) => {
        const pat = keyOf(a[1]);
        const hits: string[] = [];
        for (const k of kv.store.keys()) if (pat === '*' || globMatch(pat, k)) hits.push(k);
        w.array(hits.length);
        for (const k of hits) w.bulk(bytesOf(k));
      },
    },
  ],
  ['flushall', { arity: -1, fn: flush }],
  ['flushdb', { arity: -1, fn: flush }],
  [
    'select',
    {
      arity: 2,
      fn: (_kv, a, w) => {
        const n = parseInt64(a[1]);
        if (n === null) return w.error(NOT_INTEGER);
        if (n !== 0) return w.error('ERR DB index is out of range');
        w.raw(OK);
      },
    },
  ],
  [
    'config',
    {
      arity: -2,
      fn: (kv, a, w) => {
        const sub = lower(a[1]);
        if (sub === 'get') {
          if (a.length < 3) return w.error("ERR wrong number of arguments for 'config|get' command");
          return kv.configGet(a, w);
        }
        if (sub === 'resetstat') {
          kv.stats.commands = 0;
          kv.stats.errors = 0;
          return w.raw(OK);
        }
        if (sub === 'set') return w.error('ERR CONFIG SET is not supported by this server');
        w.error(`ERR unknown subcommand '${keyOf(a[1].subarray(0, 128))}'. Try CONFIG HELP.`);
      },
    },
  ],
  [
    'command',
    {
      arity: -1,
      fn: (_kv, a, w) => {
        if (a.length > 1 && lower(a[1]) === 'count') return w.integer(COMMANDS.size);
        w.array(0);
      },
    },
  ],
  [
    'info',
    {
      arity: -1,
      fn: (kv, _a, w) => w.bulk(bytesOf(kv.info())),
    },
  ],
  [
    'client',
    {
      arity: -2,
      fn: (_kv, a, w, s) => {
        const sub = lower(a[1]);
        if (sub === 'setname' && a.length === 3) {
          s.name = a[2].length ? a[2] : null;
          return w.raw(OK);
        }
        if (sub === 'getname') return w.bulk(s.name);
        if (sub === 'id') return w.integer(s.id);
        if (sub === 'setinfo') return w.raw(OK);
        w.error(`ERR unknown subcommand '${keyOf(a[1].subarray(0, 128))}'. Try CLIENT HELP.`);
      },
    },
  ],
  [
    'quit',
    {
      arity: -1,
      fn: (_kv, _a, w, s) => {
        s.quit = true;
        w.raw(OK);
      },
    },
  ],
];

export const COMMANDS = new Map<string, Spec>(TABLE.map(([name, spec]) => [name, { name, ...spec }]));
const UPPER = new Map<string, Spec>([...COMMANDS].map(([name, spec]) => [name.toUpperCase(), spec]));

function flush(kv: Kv, a: Command, w: Writer): void {
  if (a.length > 2 || (a.length === 2 && !eq(a[1], 'ASYNC') && !eq(a[1], 'SYNC'))) return w.error(SYNTAX);
  kv.store.flush();
  w.raw(OK);
}
