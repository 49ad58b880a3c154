/**
 * Ethernet II frames: a view over bytes with named field offsets, and a
 * repr (plain checked value) with parse and emit.
 */
import { readMac, writeMac } from '../../../lib/ether.ts';

/** Field offsets. */
export const ETH = { DST: 0, SRC: 6, TYPE: 12 } as const;
export const ETH_HEADER_LEN = 14;

export const ETHERTYPE = { IPV4: 0x0800, ARP: 0x0806, IPV6: 0x86dd, VLAN: 0x8100 } as const;
export const BROADCAST = 0xffff_ffff_ffff;

export interface EthernetRepr {
  dst: number;
  src: number;
  ethertype: number;
}

/** Parse the header of a frame whose first bytes are `b`; null if too short. */
export function parseEthernet(b: Uint8Array): EthernetRepr | null {
  if (b.length < ETH_HEADER_LEN) return null;
  return { dst: readMac(b, ETH.DST), src: readMac(b, ETH.SRC), ethertype: (b[ETH.TYPE] << 8) | b[ETH.TYPE + 1] };
}

export function emitEthernet(b: Uint8Array, r: EthernetRepr): void {
  writeMac(b, ETH.DST, r.dst);
  writeMac(b, ETH.SRC, r.src);
  b[ETH.TYPE] = r.ethertype >>> 8;
  b[ETH.TYPE + 1] = r.ethertype & 0xff;
}

/** Unicast MACs have the group bit (bit 0 of the first byte) clear. */
export function isUnicast(mac: number): boolean {
  return (Math.floor(mac / 0x100_0000_0000) & 1) === 0;
}
