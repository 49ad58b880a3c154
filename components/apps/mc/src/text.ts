/**
 * memcached's text protocol (protocol.txt): get, gets, set, add, replace,
 * append, prepend, cas, delete, incr, decr, touch, flush_all, version,
 * verbosity, stats, quit; `noreply` where memcached takes it. Pure, like
 * binary.ts (test/text.test.ts).
 */
import type { After, Context } from './binary.ts';
import { Sink } from './sink.ts';
import { MAX_KEY, parseU64, type StoreMode } from './store.ts';

/** The longest command line taken; past it without a newline the connection closes (memcached: 2048 for a key line). */
export const MAX_LINE = 8192;

export interface TextResult {
  /** Bytes of input used; 0: the request is not all in yet. */
  consumed: number;
  /** Bytes after them to skip (the data of a refused store). */
  swallow: number;
  after: After;
}

const ERROR = 'ERROR\r\n';
const BAD_FORMAT = 'CLIENT_ERROR bad command line format\r\n';

function done(consumed: number, after: After = 'go-on', swallow = 0): TextResult {
  return { consumed, swallow, after };
}

/** A whole decimal number in [min, max], or null. */
function num(s: string | undefined, min: number, max: number): number | null {
  if (s === undefined || !/^-?\d{1,20}$/.test(s)) return null;
  const v = Number(s);
  return v >= min && v <= max ? v : null;
}

/** Run the request at `at`, if it is all in; write its reply to `out`. */
export function executeText(ctx: Context, b: Uint8Array, at: number, end: number, out: Sink): TextResult {
  let nl = -1;
  const lim = Math.min(end, at + MAX_LINE);
  for (let i = at; i < lim; i++) {
    if (b[i] === 10) {
      nl = i;
      break;
    }
  }
  if (nl < 0) {
    if (end - at >= MAX_LINE) {
      out.ascii('CLIENT_ERROR line too long\r\n');
      return done(end - at, 'close-after-reply');
    }
    return done(0);
  }
  const lineEnd = nl > at && b[nl - 1] === 13 ? nl - 1 : nl;
  const line = ctx.keyString(b, at, lineEnd);
  const used = nl + 1 - at;
  const t = line.split(' ').filter((x) => x.length > 0);
  const cmd = t[0] ?? '';
  const st = ctx.stats;
  const store = ctx.store;
  const noreply = t.length > 1 && t[t.length - 1] === 'noreply';
  const reply = (s: string) => {
    if (!noreply) out.ascii(s);
  };

  switch (cmd) {
    case 'get':
    case 'gets': {
      if (t.length < 2) {
        out.ascii(ERROR);
        return done(used);
      }
      for (let i = 1; i < t.length; i++) {
        if (t[i].length > MAX_KEY) {
          out.ascii(BAD_FORMAT);
          return done(used);
        }
      }
      for (let i = 1; i < t.length; i++) {
        st.cmd_get++;
        const it = store.get(t[i]);
        if (!it) continue;
        out.ascii(`VALUE ${t[i]} ${it.flags} ${it.value.length}${cmd === 'gets' ? ` ${it.cas}` : ''}\r\n`);
        out.bytes(it.value);
        out.ascii('\r\n');
      }
      out.ascii('END\r\n');
      return done(used);
    }

    case 'set':
    case 'add':
    case 'replace':
    case 'append':
    case 'prepend':
    case 'cas': {
      const isCas = cmd === 'cas';
      const want = isCas ? 6 : 5;
      if (t.length !== want && !(t.length === want + 1 && noreply)) {
        out.ascii(ERROR);
        return done(used);
      }
      const key = t[1];
      const flags = num(t[2], 0, 0xffffffff);
      const exptime = num(t[3], -0x80000000, 0x7fffffff);
      const bytes = num(t[4], 0, 0x7fffffff);
      const cas = isCas ? (t[5] !== undefined && /^\d{1,20}$/.test(t[5]) ? Number(t[5]) : null) : 0;
      if (key.length > MAX_KEY || flags === null || exptime === null || bytes === null || cas === null) {
        out.ascii(BAD_FORMAT);
        // memcached skips the data of a store it could not parse when it can tell its length.
        return bytes === null ? done(used) : done(used, 'go-on', bytes + 2);
      }
      if (bytes > store.maxItem) {
        out.ascii('SERVER_ERROR object too large for cache\r\n');
        return done(used, 'go-on', bytes + 2);
      }
      const dataAt = nl + 1;
      if (end - dataAt < bytes + 2) return done(0);
      st.cmd_set++;
      if (b[dataAt + bytes] !== 13 || b[dataAt + bytes + 1] !== 10) {
        out.ascii('CLIENT_ERROR bad data chunk\r\n');
        return done(used + bytes + 2);
      }
      const value = b.slice(dataAt, dataAt + bytes);
      const mode: StoreMode = isCas ? 'set' : (cmd as StoreMode);
      // A cas of 0 matches nothing (memcached); the store takes 0 as "no cas".
      const r = isCas && cas === 0 ? ({ status: store.peek(key) ? 'exists' : 'not-found' } as const) : store.store(mode, key, value, flags, exptime, cas);
      switch (r.status) {
        case 'stored':
          reply('STORED\r\n');
          break;
        case 'exists':
          reply('EXISTS\r\n');
          break;
        case 'not-found':
          reply('NOT_FOUND\r\n');
          break;
        case 'not-stored':
          reply('NOT_STORED\r\n');
          break;
        case 'too-large':
          out.ascii('SERVER_ERROR object too large for cache\r\n');
          break;
        case 'no-memory':
          out.ascii('SERVER_ERROR out of memory storing object\r\n');
          break;
      }
      return done(used + bytes + 2);
    }

    case 'delete': {
      // delete <key> [0] [noreply]
      const args = t.slice(1, noreply ? -1 : undefined);
      if (args.length < 1 || args.length > 2 || (args.length === 2 && args[1] !== '0')) {
        out.ascii(args.length < 1 ? ERROR : 'CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n');
        return done(used);
      }
      if (args[0].length > MAX_KEY) {
        out.ascii(BAD_FORMAT);
        return done(used);
      }
      reply(store.delete(args[0]) === 'deleted' ? 'DELETED\r\n' : 'NOT_FOUND\r\n');
      return done(used);
    }

    case 'incr':
    case 'decr': {
      if (t.length !== 3 && !(t.length === 4 && noreply)) {
        out.ascii(ERROR);
        return done(used);
      }
      if (t[1].length > MAX_KEY) {
        out.ascii(BAD_FORMAT);
        return done(used);
      }
      const delta = /^\d{1,20}$/.test(t[2]) ? parseU64(ctx_ascii(t[2])) : null;
      if (delta === null) {
        out.ascii('CLIENT_ERROR invalid numeric delta argument\r\n');
        return done(used);
      }
      const r = store.delta(t[1], cmd === 'incr', delta, null, 0);
      if (r.status === 'ok') reply(`${r.value}\r\n`);
      else if (r.status === 'not-found') reply('NOT_FOUND\r\n');
      else if (r.status === 'non-numeric') out.ascii('CLIENT_ERROR cannot increment or decrement non-numeric value\r\n');
      else out.ascii('SERVER_ERROR out of memory\r\n');
      return done(used);
    }

    case 'touch': {
      if (t.length !== 3 && !(t.length === 4 && noreply)) {
        out.ascii(ERROR);
        return done(used);
      }
      const exptime = num(t[2], -0x80000000, 0x7fffffff);
      if (t[1].length > MAX_KEY || exptime === null) {
        out.ascii(BAD_FORMAT);
        return done(used);
      }
      st.cmd_touch++;
      reply(store.touch(t[1], exptime) ? 'TOUCHED\r\n' : 'NOT_FOUND\r\n');
      return done(used);
    }

    case 'flush_all': {
      const args = t.slice(1, noreply ? -1 : undefined);
      const delay = args.length === 0 ? 0 : num(args[0], -0x80000000, 0x7fffffff);
      if (args.length > 1 || delay === null) {
        out.ascii(ERROR);
        return done(used);
      }
      st.cmd_flush++;
      store.flush(delay);
      reply('OK\r\n');
      return done(used);
    }

    case 'version':
      out.ascii(`VERSION ${ctx.version}\r\n`);
      return done(used);

    case 'verbosity': {
      // verbosity <n> [noreply]; "verbosity noreply" says nothing (memcached).
      const args = t.slice(1, noreply ? -1 : undefined);
      if (noreply && args.length === 0) return done(used);
      const level = num(args[0], 0, 0xffffffff);
      if (args.length !== 1 || level === null) {
        out.ascii(ERROR);
        return done(used);
      }
      ctx.verbosity = level;
      reply('OK\r\n');
      return done(used);
    }

    case 'stats': {
      const group = t.slice(1).join(' ');
      if (group === 'reset') {
        for (const k of Object.keys(st)) st[k] = 0;
        out.ascii('RESET\r\n');
        return done(used);
      }
      const report = ctx.statsReport(group);
      if (!report) {
        out.ascii(ERROR);
        return done(used);
      }
      for (const [name, value] of report) out.ascii(`STAT ${name} ${value}\r\n`);
      out.ascii('END\r\n');
      return done(used);
    }

    case 'quit':
      return done(used, 'close-now');

    default:
      out.ascii(ERROR);
      return done(used);
  }
}

function ctx_ascii(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}
