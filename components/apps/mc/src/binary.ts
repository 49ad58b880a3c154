/**
 * memcached's binary protocol (protocol_binary.h; the "Memcache Binary
 * Protocol" draft): the 24-byte header, the opcodes and statuses, and the
 * commands run against the store. Pure: no imports beyond the store and
 * the output buffer, so unit tests feed it bytes (test/binary.test.ts).
 *
 * Every reply echoes the request's opaque. Quiet commands (GETQ, SETQ,
 * ...) say nothing when they succeed (GETQ and GETKQ: nothing on a miss);
 * their errors are replied. A request with a bad magic closes the
 * connection, as memcached does; an unknown opcode gets status 0x0081
 * and the connection goes on.
 */
import { Sink } from './sink.ts';
import { MAX_KEY, type Store, type StoreMode } from './store.ts';

export const MAGIC_REQUEST = 0x80;
export const MAGIC_RESPONSE = 0x81;
export const HEADER = 24;

/** Opcodes, named as in protocol_binary.h. */
export const OP = {
  GET: 0x00,
  SET: 0x01,
  ADD: 0x02,
  REPLACE: 0x03,
  DELETE: 0x04,
  INCREMENT: 0x05,
  DECREMENT: 0x06,
  QUIT: 0x07,
  FLUSH: 0x08,
  GETQ: 0x09,
  NOOP: 0x0a,
  VERSION: 0x0b,
  GETK: 0x0c,
  GETKQ: 0x0d,
  APPEND: 0x0e,
  PREPEND: 0x0f,
  STAT: 0x10,
  SETQ: 0x11,
  ADDQ: 0x12,
  REPLACEQ: 0x13,
  DELETEQ: 0x14,
  INCREMENTQ: 0x15,
  DECREMENTQ: 0x16,
  QUITQ: 0x17,
  FLUSHQ: 0x18,
  APPENDQ: 0x19,
  PREPENDQ: 0x1a,
  VERBOSITY: 0x1b,
  TOUCH: 0x1c,
  GAT: 0x1d,
  GATQ: 0x1e,
  GATK: 0x23,
  GATKQ: 0x24,
} as const;

export const STATUS = {
  SUCCESS: 0x0000,
  KEY_ENOENT: 0x0001,
  KEY_EEXISTS: 0x0002,
  E2BIG: 0x0003,
  EINVAL: 0x0004,
  NOT_STORED: 0x0005,
  DELTA_BADVAL: 0x0006,
  UNKNOWN_COMMAND: 0x0081,
  ENOMEM: 0x0082,
} as const;

/** The text memcached puts in an error reply's body. */
const MESSAGE: Record<number, string> = {
  [STATUS.KEY_ENOENT]: 'Not found',
  [STATUS.KEY_EEXISTS]: 'Data exists for key.',
  [STATUS.E2BIG]: 'Too large.',
  [STATUS.EINVAL]: 'Invalid arguments',
  [STATUS.NOT_STORED]: 'Not stored.',
  [STATUS.DELTA_BADVAL]: 'Non-numeric server-side value for incr or decr',
  [STATUS.UNKNOWN_COMMAND]: 'Unknown command',
  [STATUS.ENOMEM]: 'Out of memory',
};

/** The request header, checked only for its magic and lengths. */
export interface Header {
  opcode: number;
  keylen: number;
  extlen: number;
  datatype: number;
  vbucket: number;
  bodylen: number;
  opaque: number;
  /** The CAS as a number; -1 if it is past 2^53 (then it matches nothing). */
  cas: number;
}

/** The header at `at`, or null if its magic is not a request's. */
export function parseHeader(b: Uint8Array, at: number): Header | null {
  if (b[at] !== MAGIC_REQUEST) return null;
  const hi = u32(b, at + 16);
  return {
    opcode: b[at + 1],
    keylen: (b[at + 2] << 8) | b[at + 3],
    extlen: b[at + 4],
    datatype: b[at + 5],
    vbucket: (b[at + 6] << 8) | b[at + 7],
    bodylen: u32(b, at + 8),
    opaque: u32(b, at + 12),
    cas: hi >= 1 << 21 ? -1 : hi * 4294967296 + u32(b, at + 20),
  };
}

export function u32(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
}

/** A response header; the extras, key and value follow it. */
export function writeHeader(out: Sink, opcode: number, status: number, opaque: number, cas: number, keylen: number, extlen: number, bodylen: number): void {
  out.reserve(HEADER + bodylen);
  const b = out.buf;
  let i = out.len;
  b[i++] = MAGIC_RESPONSE;
  b[i++] = opcode;
  b[i++] = keylen >>> 8;
  b[i++] = keylen & 255;
  b[i++] = extlen;
  b[i++] = 0; // raw bytes
  b[i++] = status >>> 8;
  b[i++] = status & 255;
  out.len = i;
  out.u32(bodylen);
  out.u32(opaque);
  out.u64(cas);
}

/** An error reply: no extras, no key (GETK's miss carries it), memcached's message as the body. */
export function writeError(out: Sink, h: Header, status: number, key: Uint8Array | null = null): void {
  const msg = MESSAGE[status] ?? 'Unknown error';
  const klen = key ? key.length : 0;
  writeHeader(out, h.opcode, status, h.opaque, 0, klen, 0, klen + msg.length);
  if (key) out.bytes(key);
  out.ascii(msg);
}

/** What the connection does after a request. */
export type After = 'go-on' | 'close-after-reply' | 'close-now';

/** What the binary handler needs of its connection: the store, the version, stats. */
export interface Context {
  store: Store;
  version: string;
  /** Counters kept per app (cmd_get, cmd_set, ...). */
  stats: Record<string, number>;
  /** The STAT reply's name/value pairs. */
  statsReport(group: string): [string, string][] | null;
  /** Key bytes as a Map key. */
  keyString(b: Uint8Array, start: number, end: number): string;
  /** The verbosity asked for (kept, unused). */
  verbosity: number;
}

const STORE_MODE: Record<number, StoreMode> = {
  [OP.SET]: 'set',
  [OP.SETQ]: 'set',
  [OP.ADD]: 'add',
  [OP.ADDQ]: 'add',
  [OP.REPLACE]: 'replace',
  [OP.REPLACEQ]: 'replace',
  [OP.APPEND]: 'append',
  [OP.APPENDQ]: 'append',
  [OP.PREPEND]: 'prepend',
  [OP.PREPENDQ]: 'prepend',
};

const QUIET = new Set<number>([
  OP.GETQ,
  OP.GETKQ,
  OP.SETQ,
  OP.ADDQ,
  OP.REPLACEQ,
  OP.DELETEQ,
  OP.INCREMENTQ,
  OP.DECREMENTQ,
  OP.QUITQ,
  OP.FLUSHQ,
  OP.APPENDQ,
  OP.PREPENDQ,
  OP.GATQ,
  OP.GATKQ,
]);

/**
 * Whether the lengths fit the opcode (memcached's dispatch checks): a
 * request that fails gets EINVAL and its body is skipped.
 */
export function lengthsValid(h: Header): boolean {
  const value = h.bodylen - h.keylen - h.extlen;
  if (value < 0) return false;
  switch (h.opcode) {
    case OP.GET:
    case OP.GETQ:
    case OP.GETK:
    case OP.GETKQ:
    case OP.DELETE:
    case OP.DELETEQ:
      return h.extlen === 0 && h.keylen > 0 && value === 0;
    case OP.SET:
    case OP.SETQ:
    case OP.ADD:
    case OP.ADDQ:
    case OP.REPLACE:
    case OP.REPLACEQ:
      return h.extlen === 8 && h.keylen > 0;
    case OP.APPEND:
    case OP.APPENDQ:
    case OP.PREPEND:
    case OP.PREPENDQ:
      return h.extlen === 0 && h.keylen > 0;
    case OP.INCREMENT:
    case OP.INCREMENTQ:
    case OP.DECREMENT:
    case OP.DECREMENTQ:
      return h.extlen === 20 && h.keylen > 0 && value === 0;
    case OP.QUIT:
    case OP.QUITQ:
    case OP.NOOP:
    case OP.VERSION:
      return h.bodylen === 0;
    case OP.FLUSH:
    case OP.FLUSHQ:
      return (h.extlen === 0 || h.extlen === 4) && h.keylen === 0 && value === 0;
    case OP.STAT:
      return h.extlen === 0 && value === 0;
    case OP.VERBOSITY:
      return h.extlen === 4 && h.keylen === 0 && value === 0;
    case OP.TOUCH:
    case OP.GAT:
    case OP.GATQ:
    case OP.GATK:
    case OP.GATKQ:
      return h.extlen === 4 && h.keylen > 0 && value === 0;
    default:
      return true;
  }
}

/** SET, ADD, REPLACE, APPEND, PREPEND and their quiet forms. */
export function isStorage(opcode: number): boolean {
  return STORE_MODE[opcode] !== undefined;
}

export function isKnown(opcode: number): boolean {
  return opcode <= OP.GATQ || opcode === OP.GATK || opcode === OP.GATKQ;
}

/**
 * Run one whole request (header at `at`, body after it, all in `b`) and
 * write its reply, if any, to `out`.
 */
export function execute(ctx: Context, h: Header, b: Uint8Array, at: number, out: Sink): After {
  const op = h.opcode;
  const quiet = QUIET.has(op);
  const ext = at + HEADER;
  const keyAt = ext + h.extlen;
  const valueAt = keyAt + h.keylen;
  const end = at + HEADER + h.bodylen;
  const store = ctx.store;
  const st = ctx.stats;

  if (!isKnown(op)) {
    writeError(out, h, STATUS.UNKNOWN_COMMAND);
    return 'go-on';
  }
  if (!lengthsValid(h) || h.keylen > MAX_KEY) {
    writeError(out, h, STATUS.EINVAL);
    return 'go-on';
  }
  const key = () => ctx.keyString(b, keyAt, valueAt);

  switch (op) {
    case OP.GET:
    case OP.GETQ:
    case OP.GETK:
    case OP.GETKQ:
    case OP.GAT:
    case OP.GATQ:
    case OP.GATK:
    case OP.GATKQ: {
      const touch = op >= OP.GAT;
      st.cmd_get++;
      if (touch) st.cmd_touch++;
      const k = key();
      const it = touch ? store.touch(k, u32(b, ext)) : store.get(k);
      if (touch && it) store.counters.get_hits++;
      if (touch && !it) store.counters.get_misses++;
      const withKey = op === OP.GETK || op === OP.GETKQ || op === OP.GATK || op === OP.GATKQ;
      if (!it) {
        if (quiet) return 'go-on';
        writeError(out, h, STATUS.KEY_ENOENT, withKey ? b.subarray(keyAt, valueAt) : null);
        return 'go-on';
      }
      const klen = withKey ? h.keylen : 0;
      writeHeader(out, op, STATUS.SUCCESS, h.opaque, it.cas, klen, 4, 4 + klen + it.value.length);
      out.u32(it.flags);
      if (withKey) out.bytes(b.subarray(keyAt, valueAt));
      out.bytes(it.value);
      return 'go-on';
    }

    case OP.SET:
    case OP.SETQ:
    case OP.ADD:
    case OP.ADDQ:
    case OP.REPLACE:
    case OP.REPLACEQ:
    case OP.APPEND:
    case OP.APPENDQ:
    case OP.PREPEND:
    case OP.PREPENDQ: {
      st.cmd_set++;
      const mode = STORE_MODE[op];
      const hasExtras = h.extlen === 8;
      const flags = hasExtras ? u32(b, ext) : 0;
      const exptime = hasExtras ? u32(b, ext + 4) : 0;
      // The value is copied out of the input buffer, which is reused.
      const r = store.store(mode, key(), b.slice(valueAt, end), flags, exptime, h.cas);
      if (r.status === 'stored') {
        if (!quiet) writeHeader(out, op, STATUS.SUCCESS, h.opaque, r.cas, 0, 0, 0);
        return 'go-on';
      }
      let status: number;
      switch (r.status) {
        case 'exists':
          status = STATUS.KEY_EEXISTS;
          break;
        case 'not-found':
          status = STATUS.KEY_ENOENT;
          break;
        case 'too-large':
          status = STATUS.E2BIG;
          break;
        case 'no-memory':
          status = STATUS.ENOMEM;
          break;
        default:
          // not stored: an add finds the key, a replace does not; append and prepend say so.
          status = mode === 'add' ? STATUS.KEY_EEXISTS : mode === 'replace' ? STATUS.KEY_ENOENT : STATUS.NOT_STORED;
      }
      writeError(out, h, status);
      return 'go-on';
    }

    case OP.DELETE:
    case OP.DELETEQ: {
      const r = store.delete(key(), h.cas);
      if (r === 'deleted') {
        if (!quiet) writeHeader(out, op, STATUS.SUCCESS, h.opaque, 0, 0, 0, 0);
      } else writeError(out, h, r === 'exists' ? STATUS.KEY_EEXISTS : STATUS.KEY_ENOENT);
      return 'go-on';
    }

    case OP.INCREMENT:
    case OP.INCREMENTQ:
    case OP.DECREMENT:
    case OP.DECREMENTQ: {
      const incr = op === OP.INCREMENT || op === OP.INCREMENTQ;
      const delta = u64big(b, ext);
      const initial = u64big(b, ext + 8);
      const exptime = u32(b, ext + 16);
      // An expiry of 0xffffffff: do not create a missing item.
      const r = store.delta(key(), incr, delta, exptime === 0xffffffff ? null : initial, exptime === 0xffffffff ? 0 : exptime, h.cas);
      if (r.status === 'ok') {
        if (!quiet) {
          writeHeader(out, op, STATUS.SUCCESS, h.opaque, r.cas, 0, 0, 8);
          out.u32(Number(r.value >> 32n));
          out.u32(Number(r.value & 0xffffffffn));
        }
        return 'go-on';
      }
      const status =
        r.status === 'not-found' ? STATUS.KEY_ENOENT : r.status === 'non-numeric' ? STATUS.DELTA_BADVAL : r.status === 'exists' ? STATUS.KEY_EEXISTS : STATUS.ENOMEM;
      writeError(out, h, status);
      return 'go-on';
    }

    case OP.TOUCH: {
      st.cmd_touch++;
      const it = store.touch(key(), u32(b, ext));
      if (it) writeHeader(out, op, STATUS.SUCCESS, h.opaque, it.cas, 0, 0, 0);
      else writeError(out, h, STATUS.KEY_ENOENT);
      return 'go-on';
    }

    case OP.QUIT:
      writeHeader(out, op, STATUS.SUCCESS, h.opaque, 0, 0, 0, 0);
      return 'close-after-reply';
    case OP.QUITQ:
      return 'close-after-reply';

    case OP.FLUSH:
    case OP.FLUSHQ:
      st.cmd_flush++;
      store.flush(h.extlen === 4 ? u32(b, ext) : 0);
      if (!quiet) writeHeader(out, op, STATUS.SUCCESS, h.opaque, 0, 0, 0, 0);
      return 'go-on';

    case OP.NOOP:
      writeHeader(out, op, STATUS.SUCCESS, h.opaque, 0, 0, 0, 0);
      return 'go-on';

    case OP.VERSION:
      writeHeader(out, op, STATUS.SUCCESS, h.opaque, 0, 0, 0, ctx.version.length);
      out.ascii(ctx.version);
      return 'go-on';

    case OP.VERBOSITY:
      ctx.verbosity = u32(b, ext);
      writeHeader(out, op, STATUS.SUCCESS, h.opaque, 0, 0, 0, 0);
      return 'go-on';

    case OP.STAT: {
      const group = h.keylen ? key() : '';
      const report = ctx.statsReport(group);
      if (!report) {
        writeError(out, h, STATUS.KEY_ENOENT);
        return 'go-on';
      }
      for (const [name, value] of report) {
        writeHeader(out, op, STATUS.SUCCESS, h.opaque, 0, name.length, 0, name.length + value.length);
        out.ascii(name);
        out.ascii(value);
      }
      writeHeader(out, op, STATUS.SUCCESS, h.opaque, 0, 0, 0, 0);
      return 'go-on';
    }
  }
  writeError(out, h, STATUS.UNKNOWN_COMMAND);
  return 'go-on';
}

function u64big(b: Uint8Array, at: number): bigint {
  return (BigInt(u32(b, at)) << 32n) | BigInt(u32(b, at + 4));
}
