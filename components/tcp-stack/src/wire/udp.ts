/**
 * UDP (RFC 768): the 8-byte header.
 */
import { readU16, writeU16 } from '../../../lib/ether.ts';

export const UDP = { SRC_PORT: 0, DST_PORT: 2, LENGTH: 4, CHECKSUM: 6 } as const;
export const UDP_HEADER_LEN = 8;

export interface UdpHeader {
  srcPort: number;
  dstPort: number;
  /** Header plus payload. */
  length: number;
  checksum: number;
}

/** Parse the header at `at`; `ipPayloadLen` is the IP payload length. */
export function parseUdp(b: Uint8Array, at: number, ipPayloadLen: number): UdpHeader | 'truncated' | 'bad-length' {
  if (b.length - at < UDP_HEADER_LEN || ipPayloadLen < UDP_HEADER_LEN) return 'truncated';
  const length = readU16(b, at + UDP.LENGTH);
  if (length < UDP_HEADER_LEN || length > ipPayloadLen) return 'bad-length';
  return { srcPort: readU16(b, at), dstPort: readU16(b, at + UDP.DST_PORT), length, checksum: readU16(b, at + UDP.CHECKSUM) };
}

/** Write a header; the checksum field gets `checksum` (a pseudo-header sum when offloaded). */
export function emitUdp(b: Uint8Array, at: number, h: UdpHeader): void {
  writeU16(b, at, h.srcPort);
  writeU16(b, at + UDP.DST_PORT, h.dstPort);
  writeU16(b, at + UDP.LENGTH, h.length);
  writeU16(b, at + UDP.CHECKSUM, h.checksum);
}
