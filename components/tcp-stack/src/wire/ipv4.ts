/**
 * IPv4 (RFC 791): header view offsets, a checked repr, and emit with the
 * header checksum. Addresses are unsigned numbers, first byte most
 * significant.
 */
import { readU16, readU32, writeU16, writeU32 } from '../../../lib/ether.ts';
import { checksum } from './checksum.ts';

export const IPV4 = { VER_IHL: 0, TOS: 1, LENGTH: 2, IDENT: 4, FLAGS_FRAG: 6, TTL: 8, PROTOCOL: 9, CHECKSUM: 10, SRC: 12, DST: 16 } as const;
export const IPV4_MIN_HEADER = 20;
export const PROTO = { ICMP: 1, TCP: 6, UDP: 17 } as const;
const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;

export interface Ipv4Repr {
  src: number;
  dst: number;
  protocol: number;
  ttl: number;
  ident: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Fragment offset in bytes. */
  fragmentOffset: number;
  headerLen: number;
  /** Total length from the header (header + payload). */
  totalLen: number;
  tos: number;
}

export type Ipv4Error = 'truncated' | 'bad-version' | 'bad-header-length' | 'bad-total-length' | 'bad-checksum' | 'reserved-flag';

/**
 * Parse the IPv4 header at `at` in `b` (which holds at least the header).
 * `frameLen` is how many bytes the whole frame has after `at`, to check the
 * total length against. The header checksum is always verified (it covers
 * the header only).
 */
export function parseIpv4(b: Uint8Array, at: number, frameLen: number): Ipv4Repr | Ipv4Error {
  if (b.length - at < IPV4_MIN_HEADER) return 'truncated';
  const verIhl = b[at + IPV4.VER_IHL];
  if (verIhl >> 4 !== 4) return 'bad-version';
  const headerLen = (verIhl & 0xf) * 4;
  if (headerLen < IPV4_MIN_HEADER) return 'bad-header-length';
  if (b.length - at < headerLen) return 'truncated';
  const totalLen = readU16(b, at + IPV4.LENGTH);
  if (totalLen < headerLen || totalLen > frameLen) return 'bad-total-length';
  if (checksum(b, at, at + headerLen) !== 0) return 'bad-checksum';
  const ff = readU16(b, at + IPV4.FLAGS_FRAG);
  if (ff & 0x8000) return 'reserved-flag';
  return {
    src: readU32(b, at + IPV4.SRC),
    dst: readU32(b, at + IPV4.DST),
    protocol: b[at + IPV4.PROTOCOL],
    ttl: b[at + IPV4.TTL],
    ident: readU16(b, at + IPV4.IDENT),
    dontFragment: (ff & FLAG_DF) !== 0,
    moreFragments: (ff & FLAG_MF) !== 0,
    fragmentOffset: (ff & 0x1fff) * 8,
    headerLen,
    totalLen,
    tos: b[at + IPV4.TOS],
  };
}

export interface Ipv4Emit {
  src: number;
  dst: number;
  protocol: number;
  ttl: number;
  ident: number;
  dontFragment: boolean;
  /** Bytes after the 20-byte header. */
  payloadLen: number;
  tos?: number;
}

/** Write a 20-byte header (no options) at `at`, checksum included. */
export function emitIpv4(b: Uint8Array, at: number, r: Ipv4Emit): void {
  b[at + IPV4.VER_IHL] = 0x45;
  b[at + IPV4.TOS] = r.tos ?? 0;
  writeU16(b, at + IPV4.LENGTH, IPV4_MIN_HEADER + r.payloadLen);
  writeU16(b, at + IPV4.IDENT, r.ident & 0xffff);
  writeU16(b, at + IPV4.FLAGS_FRAG, r.dontFragment ? FLAG_DF : 0);
  b[at + IPV4.TTL] = r.ttl;
  b[at + IPV4.PROTOCOL] = r.protocol;
  writeU16(b, at + IPV4.CHECKSUM, 0);
  writeU32(b, at + IPV4.SRC, r.src);
  writeU32(b, at + IPV4.DST, r.dst);
  writeU16(b, at + IPV4.CHECKSUM, checksum(b, at, at + IPV4_MIN_HEADER));
}

export function ipToString(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

export function parseIp(s: string): number {
  const parts = s.split('.');
  if (parts.length !== 4) throw new Error(`not an IPv4 address: ${s}`);
  let ip = 0;
  for (const p of parts) {
    const n = Number(p);
    if (!/^\d{1,3}$/.test(p) || n > 255) throw new Error(`not an IPv4 address: ${s}`);
    ip = ip * 256 + n;
  }
  return ip;
}

export function ipFromTuple(t: readonly number[]): number {
  return ((t[0] << 24) | (t[1] << 16) | (t[2] << 8) | t[3]) >>> 0;
}

export function ipToTuple(ip: number): [number, number, number, number] {
  return [ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff];
}
