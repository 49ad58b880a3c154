/**
 * ARP for IPv4 over Ethernet (RFC 826): the 28-byte packet after the
 * Ethernet header.
 */
import { readMac, writeMac, readU16, writeU16, readU32, writeU32 } from '../../../lib/ether.ts';

export const ARP = { HTYPE: 0, PTYPE: 2, HLEN: 4, PLEN: 5, OPER: 6, SHA: 8, SPA: 14, THA: 18, TPA: 24 } as const;
export const ARP_LEN = 28;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

export interface ArpRepr {
  operation: number;
  senderMac: number;
  senderIp: number;
  targetMac: number;
  targetIp: number;
}

export type ArpError = 'truncated' | 'unsupported';

/** Parse an ARP packet starting at `at`. Only Ethernet/IPv4 ARP is supported. */
export function parseArp(b: Uint8Array, at: number): ArpRepr | ArpError {
  if (b.length - at < ARP_LEN) return 'truncated';
  if (readU16(b, at + ARP.HTYPE) !== 1 || readU16(b, at + ARP.PTYPE) !== 0x0800 || b[at + ARP.HLEN] !== 6 || b[at + ARP.PLEN] !== 4) {
    return 'unsupported';
  }
  const operation = readU16(b, at + ARP.OPER);
  if (operation !== ARP_REQUEST && operation !== ARP_REPLY) return 'unsupported';
  return {
    operation,
    senderMac: readMac(b, at + ARP.SHA),
    senderIp: readU32(b, at + ARP.SPA),
    targetMac: readMac(b, at + ARP.THA),
    targetIp: readU32(b, at + ARP.TPA),
  };
}

export function emitArp(b: Uint8Array, at: number, r: ArpRepr): void {
  writeU16(b, at + ARP.HTYPE, 1);
  writeU16(b, at + ARP.PTYPE, 0x0800);
  b[at + ARP.HLEN] = 6;
  b[at + ARP.PLEN] = 4;
  writeU16(b, at + ARP.OPER, r.operation);
  writeMac(b, at + ARP.SHA, r.senderMac);
  writeU32(b, at + ARP.SPA, r.senderIp);
  writeMac(b, at + ARP.THA, r.targetMac);
  writeU32(b, at + ARP.TPA, r.targetIp);
}
