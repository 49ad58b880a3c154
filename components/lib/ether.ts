/**
 * Ethernet II framing: named field offsets and helpers over Uint8Array.
 * Views never copy; `payload` is a subarray of the same bytes.
 */

export const ETH_DST = 0;
export const ETH_SRC = 6;
export const ETH_TYPE = 12;
export const ETH_HEADER_LEN = 14;

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
/** IEEE 802 local experimental EtherType 1, used by the frame demo. */
export const ETHERTYPE_LOCAL_EXPERIMENTAL = 0x88b5;

/** MACs are numbers: 48 bits fit a double exactly. */
export const BROADCAST_MAC = 0xffff_ffff_ffff;

/** Write a 48-bit MAC at `offset`, first byte most significant. */
export function writeMac(buf: Uint8Array, offset: number, mac: number): void {
  const hi = Math.floor(mac / 0x1_0000_0000);
  const lo = mac >>> 0;
  buf[offset] = (hi >>> 8) & 0xff;
  buf[offset + 1] = hi & 0xff;
  buf[offset + 2] = lo >>> 24;
  buf[offset + 3] = (lo >>> 16) & 0xff;
  buf[offset + 4] = (lo >>> 8) & 0xff;
  buf[offset + 5] = lo & 0xff;
}

/** Read a 48-bit MAC at `offset`. */
export function readMac(buf: Uint8Array, offset: number): number {
  const hi = (buf[offset] << 8) | buf[offset + 1];
  const lo = ((buf[offset + 2] << 24) | (buf[offset + 3] << 16) | (buf[offset + 4] << 8) | buf[offset + 5]) >>> 0;
  return hi * 0x1_0000_0000 + lo;
}

export function readU16(buf: Uint8Array, offset: number): number {
  return (buf[offset] << 8) | buf[offset + 1];
}

export function writeU16(buf: Uint8Array, offset: number, v: number): void {
  buf[offset] = (v >>> 8) & 0xff;
  buf[offset + 1] = v & 0xff;
}

export function readU32(buf: Uint8Array, offset: number): number {
  return ((buf[offset] << 24) | (buf[offset + 1] << 16) | (buf[offset + 2] << 8) | buf[offset + 3]) >>> 0;
}

export function writeU32(buf: Uint8Array, offset: number, v: number): void {
  buf[offset] = (v >>> 24) & 0xff;
  buf[offset + 1] = (v >>> 16) & 0xff;
  buf[offset + 2] = (v >>> 8) & 0xff;
  buf[offset + 3] = v & 0xff;
}

/** Format a MAC as aa:bb:cc:dd:ee:ff. */
export function macToString(mac: number): string {
  const b = new Uint8Array(6);
  writeMac(b, 0, mac);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}
