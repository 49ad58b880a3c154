/**
 * The NBD protocol (NetworkBlockDevice/nbd, doc/proto.md) as the server
 * side of it needs: the fixed newstyle handshake, option haggling, the
 * 28-byte request header, the 16-byte simple reply, and the checks that
 * turn a request into block commands or an error. Pure: no imports, no
 * I/O, so unit tests run it in Node (test/proto.test.ts).
 *
 * Only headers are parsed here. Payload bytes (a WRITE's data, a READ's
 * reply data) never reach this module: the server moves them between the
 * socket and in-memory files with splice and sendfile.
 */

// ---- magics and numbers, named as in proto.md ------------------------------

/** 'NBDMAGIC' then 'IHAVEOPT': the first 16 bytes the server sends. */
export const NBDMAGIC = [0x4e, 0x42, 0x44, 0x4d, 0x41, 0x47, 0x49, 0x43];
export const IHAVEOPT = [0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54];
/** Option reply magic 0x0003e889045565a9, as two 32-bit halves. */
const OPT_REPLY_MAGIC_HI = 0x0003e889;
const OPT_REPLY_MAGIC_LO = 0x045565a9;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags. */
export const TFLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

export const CMD_FLAG = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
} as const;

/** Error values of the simple reply (proto.md, "Error values"). */
export const ERR = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** Bytes of a request header and of a simple reply. */
export const REQUEST_BYTES = 28;
export const REPLY_BYTES = 16;
/** Bytes of an option header (magic, option, length). */
export const OPTION_HEADER_BYTES = 16;
/**
 * The largest READ or WRITE served: the maximum block size advertised,
 * and the size up to which the spec promises no disconnect. Larger ones
 * get an error and a disconnect (a WRITE's payload is not read).
 */
export const MAX_PAYLOAD = 32 << 20;
/** The preferred block size advertised. */
export const PREFERRED_BLOCK = 4096;
/** Option data above this is skipped and refused (names are at most 4096 bytes). */
export const MAX_OPTION_DATA = 65536;
/** Options one connection may send before it is cut off. */
export const MAX_OPTIONS = 256;

// ---- byte helpers ---------------------------------------------------------

function u32be(b: Uint8Array, at: number): number {
  return ((b[at] << 24) >>> 0) + (b[at + 1] << 16) + (b[at + 2] << 8) + b[at + 3];
}

function u16be(b: Uint8Array, at: number): number {
  return (b[at] << 8) | b[at + 1];
}

function put32(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 24) & 0xff;
  b[at + 1] = (v >>> 16) & 0xff;
  b[at + 2] = (v >>> 8) & 0xff;
  b[at + 3] = v & 0xff;
}

function put16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

/** A 64-bit unsigned value as a number; exact below 2^53 (above, only "huge" matters). */
function put64(b: Uint8Array, at: number, v: number): void {
  put32(b, at, Math.floor(v / 2 ** 32));
  put32(b, at + 4, v % 2 ** 32);
}

function ascii(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    b[i] = c < 128 ? c : 63;
  }
  return b;
}

function text(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---- exports --------------------------------------------------------------

/** One export: a block namespace as NBD offers it. */
export interface ExportInfo {
  /** The name a client asks for ("" also reaches the first export). */
  name: string;
  description: string;
  /** Size in bytes, a multiple of `blockSize`. */
  size: number;
  /** The namespace block size: the minimum block size advertised. */
  blockSize: number;
  readOnly: boolean;
}

/** The transmission flags of an export. */
export function transmissionFlags(e: ExportInfo): number {
  let f = TFLAG.HAS_FLAGS | TFLAG.SEND_FLUSH | TFLAG.SEND_FUA;
  if (e.readOnly) f |= TFLAG.READ_ONLY;
  else f |= TFLAG.SEND_TRIM | TFLAG.SEND_WRITE_ZEROES;
  // Every connection goes to the same namespace queue and the same device
  // (no cache of the app's own), and FLUSH is the device's: what one
  // connection's FLUSH or FUA made durable, every connection sees.
  f |= TFLAG.CAN_MULTI_CONN;
  return f;
}

/** (minimum, preferred, maximum) block sizes advertised for an export. */
export function blockSizes(e: ExportInfo): [number, number, number] {
  const min = e.blockSize;
  const preferred = Math.max(min, PREFERRED_BLOCK);
  return [min, preferred, MAX_PAYLOAD];
}

// ---- the handshake --------------------------------------------------------

/** The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags (18 bytes). */
export function greeting(): Uint8Array {
  const b = new Uint8Array(18);
  b.set(NBDMAGIC, 0);
  b.set(IHAVEOPT, 8);
  put16(b, 16, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
  return b;
}

/** An option reply: magic, option, type, length, data. */
export function optionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(20 + data.length);
  put32(b, 0, OPT_REPLY_MAGIC_HI);
  put32(b, 4, OPT_REPLY_MAGIC_LO);
  put32(b, 8, option);
  put32(b, 12, type);
  put32(b, 16, data.length);
  b.set(data, 20);
  return b;
}

export interface OptionHeader {
  /** Whether the magic was IHAVEOPT. */
  ok: boolean;
  option: number;
  length: number;
}

export function parseOptionHeader(b: Uint8Array): OptionHeader {
  let ok = true;
  for (let i = 0; i < 8; i++) if (b[i] !== IHAVEOPT[i]) ok = false;
  return { ok, option: u32be(b, 8), length: u32be(b, 12) };
}

/** What the connection does after an option. */
export type Next =
  /** Read the next option. */
  | 'options'
  /** Send the replies, then enter transmission on `export`. */
  | 'transmission'
  /** Send the replies, then close (NBD_OPT_ABORT). */
  | 'close-after'
  /** Close now, sending nothing more (a violation, or an unknown export after NBD_OPT_EXPORT_NAME). */
  | 'close';

export interface OptionResult {
  send: Uint8Array[];
  next: Next;
  /** The export chosen (for 'transmission'). */
  export?: ExportInfo;
  /** Why the connection ends, for the log. */
  why?: string;
}

/**
 * Option haggling for one connection: client flags, then options until
 * NBD_OPT_GO or NBD_OPT_EXPORT_NAME enters transmission.
 */
export class Negotiation {
  fixed = false;
  noZeroes = false;
  options = 0;

  constructor(readonly exports: ExportInfo[]) {}

  /** The client's 32-bit flags; false means close (unknown flags). */
  clientFlags(b: Uint8Array): boolean {
    const f = u32be(b, 0);
    if ((f & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) return false;
    this.fixed = (f & FLAG_C_FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (f & FLAG_C_NO_ZEROES) !== 0;
    return true;
  }

  find(name: string): ExportInfo | undefined {
    if (name === '') return this.exports[0];
    return this.exports.find((e) => e.name === name);
  }

  /** An option whose data was too long to keep: refused, haggling goes on. */
  tooBig(option: number): OptionResult {
    this.options++;
    if (!this.fixed || option === OPT.EXPORT_NAME) return { send: [], next: 'close', why: 'option data too long' };
    return this.error(option, REP.ERR_TOO_BIG, 'option data too long');
  }

  private error(option: number, type: number, message: string): OptionResult {
    if (this.options > MAX_OPTIONS) return { send: [], next: 'close', why: 'too many options' };
    return { send: [optionReply(option, type, ascii(message))], next: 'options' };
  }

  /** One option and its data. */
  option(option: number, data: Uint8Array): OptionResult {
    this.options++;
    if (option === OPT.EXPORT_NAME) {
      const e = this.find(text(data));
      if (!e) return { send: [], next: 'close', why: `no export named "${text(data)}"` };
      const b = new Uint8Array(this.noZeroes ? 10 : 134);
      put64(b, 0, e.size);
      put16(b, 8, transmissionFlags(e));
      return { send: [b], next: 'transmission', export: e };
    }
    // Non-fixed newstyle knows no other option and no option replies.
    if (!this.fixed) return { send: [], next: 'close', why: `option ${option} from a client without fixed newstyle` };
    switch (option) {
      case OPT.ABORT:
        return { send: [optionReply(option, REP.ACK)], next: 'close-after', why: 'NBD_OPT_ABORT' };
      case OPT.LIST: {
        if (data.length !== 0) return this.error(option, REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
        const send = this.exports.map((e) => {
          const name = ascii(e.name);
          const d = new Uint8Array(4 + name.length);
          put32(d, 0, name.length);
          d.set(name, 4);
          return optionReply(option, REP.SERVER, d);
        });
        send.push(optionReply(option, REP.ACK));
        return { send, next: 'options' };
      }
      case OPT.INFO:
      case OPT.GO:
        return this.infoOrGo(option, data);
      default:
        // STARTTLS, STRUCTURED_REPLY, the meta contexts, extended headers
        // and anything unknown: unsupported; the client carries on.
        return this.error(option, REP.ERR_UNSUP, `option ${option} is not supported`);
    }
  }

  private infoOrGo(option: number, data: Uint8Array): OptionResult {
    // u32 name length, name, u16 number of requests, u16 requests.
    if (data.length < 6) return this.error(option, REP.ERR_INVALID, 'option data too short');
    const nameLen = u32be(data, 0);
    if (nameLen > data.length - 6) return this.error(option, REP.ERR_INVALID, 'name length runs past the data');
    const name = text(data.subarray(4, 4 + nameLen));
    const n = u16be(data, 4 + nameLen);
    if (data.length !== 4 + nameLen + 2 + 2 * n) return this.error(option, REP.ERR_INVALID, 'information requests do not match the length');
    const asked = new Set<number>();
    for (let i = 0; i < n; i++) asked.add(u16be(data, 6 + nameLen + 2 * i));
    const e = this.find(name);
    if (!e) return this.error(option, REP.ERR_UNKNOWN, `no export named "${name}"`);
    const send: Uint8Array[] = [];
    const exp = new Uint8Array(12);
    put16(exp, 0, INFO.EXPORT);
    put64(exp, 2, e.size);
    put16(exp, 10, transmissionFlags(e));
    send.push(optionReply(option, REP.INFO, exp));
    if (asked.has(INFO.NAME)) {
      const nm = ascii(e.name);
      const d = new Uint8Array(2 + nm.length);
      put16(d, 0, INFO.NAME);
      d.set(nm, 2);
      send.push(optionReply(option, REP.INFO, d));
    }
    if (asked.has(INFO.DESCRIPTION)) {
      const ds = ascii(e.description);
      const d = new Uint8Array(2 + ds.length);
      put16(d, 0, INFO.DESCRIPTION);
      d.set(ds, 2);
      send.push(optionReply(option, REP.INFO, d));
    }
    // Block sizes go out whether asked for or not: the spec lets a server
    // send any information, and clients that asked honour them.
    const [min, pref, max] = blockSizes(e);
    const bs = new Uint8Array(14);
    put16(bs, 0, INFO.BLOCK_SIZE);
    put32(bs, 2, min);
    put32(bs, 6, pref);
    put32(bs, 10, max);
    send.push(optionReply(option, REP.INFO, bs));
    send.push(optionReply(option, REP.ACK));
    if (option === OPT.GO) return { send, next: 'transmission', export: e };
    return { send, next: 'options' };
  }
}

// ---- transmission ---------------------------------------------------------

/** A request header, checked for its magic only. */
export interface Request {
  magicOk: boolean;
  flags: number;
  type: number;
  /** The cookie (handle), opaque, as its two 32-bit halves. */
  cookieHi: number;
  cookieLo: number;
  /** The offset; values at or above 2^53 are not exact (they are out of range anyway). */
  offset: number;
  length: number;
}

export function parseRequest(b: Uint8Array, at = 0): Request {
  return {
    magicOk: u32be(b, at) === REQUEST_MAGIC,
    flags: u16be(b, at + 4),
    type: u16be(b, at + 6),
    cookieHi: u32be(b, at + 8),
    cookieLo: u32be(b, at + 12),
    offset: u32be(b, at + 16) * 2 ** 32 + u32be(b, at + 20),
    length: u32be(b, at + 24),
  };
}

/** Build a request header (for tests and tools). */
export function encodeRequest(r: Omit<Request, 'magicOk'> & { magic?: number }): Uint8Array {
  const b = new Uint8Array(REQUEST_BYTES);
  put32(b, 0, r.magic ?? REQUEST_MAGIC);
  put16(b, 4, r.flags);
  put16(b, 6, r.type);
  put32(b, 8, r.cookieHi);
  put32(b, 12, r.cookieLo);
  put64(b, 16, r.offset);
  put32(b, 24, r.length);
  return b;
}

/** A simple reply header: magic, error, cookie. */
export function simpleReply(error: number, cookieHi: number, cookieLo: number): Uint8Array {
  const b = new Uint8Array(REPLY_BYTES);
  put32(b, 0, SIMPLE_REPLY_MAGIC);
  put32(b, 4, error);
  put32(b, 8, cookieHi);
  put32(b, 12, cookieLo);
  return b;
}

/** The block work a request becomes. */
export type Op = 'read' | 'write' | 'flush' | 'trim' | 'zeroes';

/** What the server does with one request header. */
export type Plan =
  /** NBD_CMD_DISC: no reply; finish what is in flight, then close. */
  | { kind: 'disc' }
  /** A bad magic: the stream cannot be followed any more; close. */
  | { kind: 'hangup'; why: string }
  /**
   * Reply with `errno`. `payload` bytes (a refused WRITE's data) are read
   * off the socket and dropped first; `fatal` closes the connection after
   * the reply (a READ or WRITE above MAX_PAYLOAD: its payload is not read).
   */
  | { kind: 'error'; errno: number; payload: number; fatal: boolean; why: string }
  | { kind: 'io'; op: Op; offset: number; length: number; fua: boolean };

/** The command flags each command accepts (others get EINVAL). */
function allowedFlags(type: number): number {
  // FUA is accepted on every command once SEND_FUA is advertised.
  if (type === CMD.WRITE_ZEROES) return CMD_FLAG.FUA | CMD_FLAG.NO_HOLE;
  return CMD_FLAG.FUA;
}

/**
 * Check one request against its export. Errors as proto.md asks: EINVAL
 * for unknown commands and flags, misaligned requests and reads past the
 * end; ENOSPC for writes past the end; EPERM for writes to a read-only
 * export.
 */
export function plan(r: Request, e: ExportInfo): Plan {
  if (!r.magicOk) return { kind: 'hangup', why: 'bad request magic' };
  const payload = r.type === CMD.WRITE ? r.length : 0;
  const err = (errno: number, why: string, fatal = false): Plan => ({ kind: 'error', errno, payload: fatal ? 0 : payload, fatal, why });
  if (r.type === CMD.DISC) return { kind: 'disc' };
  if ((r.type === CMD.READ || r.type === CMD.WRITE) && r.length > MAX_PAYLOAD) {
    return err(r.type === CMD.READ ? ERR.EOVERFLOW : ERR.EINVAL, `${r.length} bytes is above the maximum block size`, true);
  }
  const op: Op | undefined =
    r.type === CMD.READ ? 'read'
    : r.type === CMD.WRITE ? 'write'
    : r.type === CMD.FLUSH ? 'flush'
    : r.type === CMD.TRIM ? 'trim'
    : r.type === CMD.WRITE_ZEROES ? 'zeroes'
    : undefined;
  if (op === undefined) return err(ERR.EINVAL, `unknown command ${r.type}`);
  if ((r.flags & ~allowedFlags(r.type)) !== 0) return err(ERR.EINVAL, `command flags 0x${r.flags.toString(16)} not valid for command ${r.type}`);
  const fua = (r.flags & CMD_FLAG.FUA) !== 0;
  // FLUSH's offset and length are reserved; they are not checked.
  if (op === 'flush') return { kind: 'io', op, offset: 0, length: 0, fua };
  if (op !== 'read' && e.readOnly) return err(ERR.EPERM, 'read-only export');
  if (r.length === 0) return err(ERR.EINVAL, 'zero length');
  if (r.offset % e.blockSize !== 0 || r.length % e.blockSize !== 0) return err(ERR.EINVAL, `not aligned to the block size ${e.blockSize}`);
  if (r.offset + r.length > e.size) return err(op === 'read' ? ERR.EINVAL : ERR.ENOSPC, 'past the end of the export');
  return { kind: 'io', op, offset: r.offset, length: r.length, fua };
}

/** A block command's completion status (libretto:block/types.status) as an NBD error. */
export function errnoOf(status: string, op: Op): number {
  switch (status) {
    case 'success':
      return 0;
    case 'write-to-read-only':
      return ERR.EPERM;
    case 'lba-out-of-range':
      return op === 'read' ? ERR.EINVAL : ERR.ENOSPC;
    case 'invalid-opcode':
    case 'invalid-field':
      return ERR.EINVAL;
    default:
      // internal-error, aborted, invalid-namespace: the device failed us.
      return ERR.EIO;
  }
}

/** One block command of a request: namespace blocks and the byte range in the request's buffer. */
export interface Chunk {
  slba: number;
  nlb: number;
  /** Offset of this chunk's data from the start of the request's buffer. */
  bufferOffset: number;
  bytes: number;
}

/**
 * The next block command of a request whose bytes from `cursor` (an
 * absolute offset in the export) to `end` are not yet submitted; each
 * moves at most `maxBytes` (a multiple of the block size).
 */
export function nextChunk(start: number, cursor: number, end: number, blockSize: number, maxBytes: number): Chunk {
  const bytes = Math.min(end - cursor, maxBytes);
  return { slba: cursor / blockSize, nlb: bytes / blockSize, bufferOffset: cursor - start, bytes };
}

/** The largest multiple of `blockSize` not above `max` blocks' worth and not above MAX_PAYLOAD. */
export function maxChunkBytes(blockSize: number, maxTransferBlocks: number): number {
  const blocks = Math.max(1, Math.min(maxTransferBlocks, Math.floor(MAX_PAYLOAD / blockSize)));
  return blocks * blockSize;
}
