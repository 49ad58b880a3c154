/**
 * ICMPv4 (RFC 792): echo request and reply, destination unreachable.
 */
import { readU16, writeU16 } from '../../../lib/ether.ts';
import { checksum, sumWords, finish } from './checksum.ts';

export const ICMP = { TYPE: 0, CODE: 1, CHECKSUM: 2, IDENT: 4, SEQ: 6 } as const;
export const ICMP_HEADER_LEN = 8;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACHABLE = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const UNREACH_PORT = 3;
export const UNREACH_FRAG_NEEDED = 4;

export interface IcmpHeader {
  type: number;
  code: number;
  /** Echo identifier and sequence (bytes 4-7 for other types). */
  ident: number;
  seq: number;
}

/**
 * Parse the ICMP header at `at`. When the whole message is in `b`
 * (`messageLen` bytes from `at`), the checksum is verified here; otherwise
 * the caller relies on the link's checksum offload.
 */
export function parseIcmp(b: Uint8Array, at: number, messageLen: number): IcmpHeader | 'truncated' | 'bad-checksum' {
  if (b.length - at < ICMP_HEADER_LEN || messageLen < ICMP_HEADER_LEN) return 'truncated';
  if (b.length - at >= messageLen && checksum(b, at, at + messageLen) !== 0) return 'bad-checksum';
  return { type: b[at], code: b[at + 1], ident: readU16(b, at + ICMP.IDENT), seq: readU16(b, at + ICMP.SEQ) };
}

/**
 * Write an ICMP header at `at` whose checksum covers the header and
 * `bodySum` (the unfolded word sum of the body, which may live elsewhere).
 */
export function emitIcmp(b: Uint8Array, at: number, h: IcmpHeader, bodySum: number): void {
  b[at] = h.type;
  b[at + 1] = h.code;
  writeU16(b, at + ICMP.CHECKSUM, 0);
  writeU16(b, at + ICMP.IDENT, h.ident);
  writeU16(b, at + ICMP.SEQ, h.seq);
  writeU16(b, at + ICMP.CHECKSUM, finish(sumWords(b, at, at + ICMP_HEADER_LEN, bodySum)));
}

/**
 * The echo reply's checksum from the request's, without summing the body
 * (RFC 1624): only the type byte changes, from 8 to 0.
 */
export function echoReplyChecksum(requestChecksum: number): number {
  // HC' = ~(~HC + ~m + m'), with m = 0x0800 (type 8, code 0), m' = 0x0000.
  let sum = (~requestChecksum & 0xffff) + (~0x0800 & 0xffff) + 0;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
