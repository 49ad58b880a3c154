/**
 * TCP segments (RFC 9293, options from RFC 7323 and RFC 2018): header
 * offsets, option parsing and emitting, and a checked repr.
 *
 * Sequence numbers are unsigned 32-bit numbers on the wire; the state
 * machine works in stream offsets and converts at this edge.
 */
import { readU16, readU32, writeU16, writeU32 } from '../../../lib/ether.ts';

export const TCP = { SRC_PORT: 0, DST_PORT: 2, SEQ: 4, ACK: 8, DATA_OFF: 12, FLAGS: 13, WINDOW: 14, CHECKSUM: 16, URGENT: 18 } as const;
export const TCP_MIN_HEADER = 20;
export const TCP_MAX_HEADER = 60;

export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const PSH = 0x08;
export const ACK = 0x10;
export const URG = 0x20;
export const ECE = 0x40;
export const CWR = 0x80;

const OPT_END = 0;
const OPT_NOP = 1;
const OPT_MSS = 2;
const OPT_WSCALE = 3;
const OPT_SACK_PERMITTED = 4;
const OPT_SACK = 5;
const OPT_TIMESTAMP = 8;

/** A SACK block: sequence numbers, left edge inclusive, right exclusive. */
export interface SackBlock {
  left: number;
  right: number;
}

export interface TcpOptions {
  mss?: number;
  /** Window scale shift (RFC 7323 caps it at 14). */
  wscale?: number;
  sackPermitted?: boolean;
  sack?: SackBlock[];
  /** TSval and TSecr. */
  timestamp?: { value: number; echo: number };
}

export interface TcpHeader {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  headerLen: number;
  urgent: number;
  options: TcpOptions;
}

export type TcpError = 'truncated' | 'bad-header-length' | 'bad-options';

/**
 * Parse options in b[start, end). Unknown options are skipped by their
 * length; a length that runs past the header or is below 2 makes the
 * segment malformed (RFC 9293 3.1: MUST-64 tolerates unknown options).
 */
export function parseOptions(b: Uint8Array, start: number, end: number): TcpOptions | 'bad-options' {
  const o: TcpOptions = {};
  let i = start;
  while (i < end) {
    const kind = b[i];
    if (kind === OPT_END) break;
    if (kind === OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return 'bad-options';
    const len = b[i + 1];
    if (len < 2 || i + len > end) return 'bad-options';
    switch (kind) {
      case OPT_MSS:
        if (len !== 4) return 'bad-options';
        o.mss = readU16(b, i + 2);
        break;
      case OPT_WSCALE:
        if (len !== 3) return 'bad-options';
        // RFC 7323 2.3: a shift above 14 is treated as 14.
        o.wscale = Math.min(b[i + 2], 14);
        break;
      case OPT_SACK_PERMITTED:
        if (len !== 2) return 'bad-options';
        o.sackPermitted = true;
        break;
      case OPT_SACK: {
        if ((len - 2) % 8 !== 0 || len === 2) return 'bad-options';
        const blocks: SackBlock[] = [];
        for (let j = i + 2; j < i + len; j += 8) blocks.push({ left: readU32(b, j), right: readU32(b, j + 4) });
        o.sack = blocks;
        break;
      }
      case OPT_TIMESTAMP:
        if (len !== 10) return 'bad-options';
        o.timestamp = { value: readU32(b, i + 2), echo: readU32(b, i + 6) };
        break;
      default:
        break;
    }
    i += len;
  }
  return o;
}

/** Parse the header at `at`; `segmentLen` is the IP payload length. */
export function parseTcp(b: Uint8Array, at: number, segmentLen: number): TcpHeader | TcpError {
  if (b.length - at < TCP_MIN_HEADER || segmentLen < TCP_MIN_HEADER) return 'truncated';
  const headerLen = (b[at + TCP.DATA_OFF] >> 4) * 4;
  if (headerLen < TCP_MIN_HEADER || headerLen > segmentLen) return 'bad-header-length';
  if (b.length - at < headerLen) return 'truncated';
  const options = parseOptions(b, at + TCP_MIN_HEADER, at + headerLen);
  if (options === 'bad-options') return options;
  return {
    srcPort: readU16(b, at),
    dstPort: readU16(b, at + TCP.DST_PORT),
    seq: readU32(b, at + TCP.SEQ),
    ack: readU32(b, at + TCP.ACK),
    flags: b[at + TCP.FLAGS],
    window: readU16(b, at + TCP.WINDOW),
    headerLen,
    urgent: readU16(b, at + TCP.URGENT),
    options,
  };
}

/** Option space in a header: data offset 15 (60 bytes) less the fixed 20. */
export const TCP_MAX_OPTIONS = TCP_MAX_HEADER - TCP_MIN_HEADER;

/** Bytes every option but SACK takes when emitted. */
function fixedOptionsLength(o: TcpOptions): number {
  let n = 0;
  if (o.mss !== undefined) n += 4;
  if (o.wscale !== undefined) n += 4; // NOP + 3
  if (o.sackPermitted) n += o.timestamp ? 2 : 4; // shares NOP NOP with the timestamp otherwise
  if (o.timestamp) n += o.sackPermitted ? 10 : 12;
  return n;
}

/**
 * How many of `o.sack`'s blocks are emitted: those that fit in the option
 * space after the other options (three beside timestamps, four without),
 * the first ones, which RFC 2018 4 makes the most recent. Linux trims the
 * same way (tcp_established_options).
 */
function sackBlocksEmitted(o: TcpOptions, fixed: number): number {
  if (!o.sack || !o.sack.length) return 0;
  return Math.max(0, Math.min(o.sack.length, Math.floor((TCP_MAX_OPTIONS - fixed - 4) / 8)));
}

/** Bytes the options take when emitted, padded to a multiple of 4, at most 40. */
export function optionsLength(o: TcpOptions): number {
  const fixed = fixedOptionsLength(o);
  const blocks = sackBlocksEmitted(o, fixed);
  return fixed + (blocks ? 4 + 8 * blocks : 0); // NOP NOP + kind len + blocks
}

/**
 * Write options at `at` in the layout Linux uses: MSS; SACK-permitted and
 * timestamp together (kind 4 then kind 8) or each padded with NOPs; NOP +
 * window scale; NOP NOP + SACK blocks, as many as fit in the 40 bytes of
 * option space (see sackBlocksEmitted). Returns the bytes written
 * (optionsLength(o)).
 */
export function emitOptions(b: Uint8Array, at: number, o: TcpOptions): number {
  const blocks = sackBlocksEmitted(o, fixedOptionsLength(o));
  let i = at;
  if (o.mss !== undefined) {
    b[i] = OPT_MSS;
    b[i + 1] = 4;
    writeU16(b, i + 2, o.mss);
    i += 4;
  }
  if (o.sackPermitted && o.timestamp) {
    b[i] = OPT_SACK_PERMITTED;
    b[i + 1] = 2;
    i += 2;
  } else if (o.sackPermitted) {
    b[i] = OPT_NOP;
    b[i + 1] = OPT_NOP;
    b[i + 2] = OPT_SACK_PERMITTED;
    b[i + 3] = 2;
    i += 4;
  }
  if (o.timestamp) {
    if (!o.sackPermitted) {
      b[i] = OPT_NOP;
      b[i + 1] = OPT_NOP;
      i += 2;
    }
    b[i] = OPT_TIMESTAMP;
    b[i + 1] = 10;
    writeU32(b, i + 2, o.timestamp.value >>> 0);
    writeU32(b, i + 6, o.timestamp.echo >>> 0);
    i += 10;
  }
  if (o.wscale !== undefined) {
    b[i] = OPT_NOP;
    b[i + 1] = OPT_WSCALE;
    b[i + 2] = 3;
    b[i + 3] = o.wscale;
    i += 4;
  }
  if (blocks > 0) {
    b[i] = OPT_NOP;
    b[i + 1] = OPT_NOP;
    b[i + 2] = OPT_SACK;
    b[i + 3] = 2 + 8 * blocks;
    i += 4;
    for (let k = 0; k < blocks; k++) {
      const s = o.sack![k];
      writeU32(b, i, s.left >>> 0);
      writeU32(b, i + 4, s.right >>> 0);
      i += 8;
    }
  }
  return i - at;
}

/**
 * Write a header with options at `at`; returns the header length. The
 * checksum field gets `checksum` (the pseudo-header sum when the link
 * completes it, or the full checksum).
 */
export function emitTcp(b: Uint8Array, at: number, h: Omit<TcpHeader, 'headerLen' | 'urgent'> & { checksum: number }): number {
  const optLen = emitOptions(b, at + TCP_MIN_HEADER, h.options);
  const headerLen = TCP_MIN_HEADER + optLen;
  writeU16(b, at, h.srcPort);
  writeU16(b, at + TCP.DST_PORT, h.dstPort);
  writeU32(b, at + TCP.SEQ, h.seq >>> 0);
  writeU32(b, at + TCP.ACK, h.ack >>> 0);
  b[at + TCP.DATA_OFF] = (headerLen / 4) << 4;
  b[at + TCP.FLAGS] = h.flags;
  writeU16(b, at + TCP.WINDOW, h.window);
  writeU16(b, at + TCP.CHECKSUM, h.checksum);
  writeU16(b, at + TCP.URGENT, 0);
  return headerLen;
}

/** a < b in sequence space (RFC 9293 3.4). */
export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

/** b - a in sequence space, as a signed 32-bit distance. */
export function seqDiff(b: number, a: number): number {
  return (b - a) | 0;
}

export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

export function flagsToString(f: number): string {
  const names: [number, string][] = [[SYN, 'S'], [FIN, 'F'], [RST, 'R'], [PSH, 'P'], [ACK, '.'], [URG, 'U'], [ECE, 'E'], [CWR, 'W']];
  return names.filter(([bit]) => f & bit).map(([, n]) => n).join('') || 'none';
}
