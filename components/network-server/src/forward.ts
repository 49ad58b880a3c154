/**
 * The network server's forwarding rules, as pure logic over a batch of
 * frames: no imports, no clock, so Node runs it in unit tests and the
 * component runs it in wasmtime.
 *
 * A frame from the NIC goes to an app with a dedicated IP by destination
 * IP, or, for the shared IP, by protocol and destination port through the
 * portmap. The server answers ARP for the shared IP and ping on it, sends
 * a TCP reset or an ICMP port unreachable for closed ports on it (as a
 * kernel would), floods broadcasts, and drops the rest with a reason. A
 * frame from an app goes out the NIC, or back in to another app when it is
 * addressed to one (hairpin), after checking that the app sends from its
 * own address (and, on the shared IP, from a port it holds).
 *
 * Decisions are written as packed routes (frame id, destination) and
 * built frames (port, bytes), the formats of `libretto:net/rings`.
 */

export const NIC_PORT = 0;
export const FLOOD = 0xffff_ffff;
export const CONSUMED = 0xffff_fffe;
export const DROP_BASE = 0xffff_0000;
export const DROP_REASONS = ['malformed', 'bad-checksum', 'not-ours', 'no-listener', 'ring-full', 'filtered', 'no-buffer', 'fragment', 'unsupported'] as const;
export type DropReason = (typeof DROP_REASONS)[number];

const ETH_ARP = 0x0806;
const ETH_IPV4 = 0x0800;
const BROADCAST_MAC = 0xffff_ffff_ffff;
const PROTO_ICMP = 1;
const PROTO_TCP = 6;
const PROTO_UDP = 17;

export interface PortView {
  port: number;
  name: string;
  mac: number;
  /** A dedicated IP, or null for an app on the shared IP (and for the NIC). */
  ip: number | null;
}

export interface ServerConfig {
  nicMac: number;
  sharedIp: number;
  prefixLen: number;
}

/** One received frame, as the rings hand it over. */
export interface InFrame {
  port: number;
  id: number;
  len: number;
  head: Uint8Array;
}

export interface LookupKey {
  proto: 'tcp' | 'udp';
  port: number;
}

/** Bytes of a `rings.recv` descriptor before each frame's head. */
const RX_DESC = 24;

/** Parse a `rings.recv` batch into `out` (heads are views into `batch`). */
export function parseBatch(batch: Uint8Array, out: InFrame[]): void {
  out.length = 0;
  const dv = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  let at = 0;
  while (at + RX_DESC <= batch.length) {
    const headLen = dv.getUint16(at + 22, true);
    const end = at + RX_DESC + headLen;
    if (end > batch.length) break;
    out.push({ port: dv.getUint32(at, true), id: dv.getUint32(at + 4, true), len: dv.getUint32(at + 8, true), head: batch.subarray(at + RX_DESC, end) });
    at = end;
  }
}

/** What the decisions of one batch came to. */
export class Decisions {
  routes = new Uint8Array(8 * 256);
  routeCount = 0;
  built = new Uint8Array(2048);
  builtLen = 0;
  builtCount = 0;

  reset(): void {
    this.routeCount = 0;
    this.builtLen = 0;
    this.builtCount = 0;
  }

  route(id: number, dest: number): void {
    const at = this.routeCount * 8;
    if (at + 8 > this.routes.length) {
      const bigger = new Uint8Array(this.routes.length * 2);
      bigger.set(this.routes);
      this.routes = bigger;
    }
    const r = this.routes;
    r[at] = id & 0xff;
    r[at + 1] = (id >>> 8) & 0xff;
    r[at + 2] = (id >>> 16) & 0xff;
    r[at + 3] = (id >>> 24) & 0xff;
    r[at + 4] = dest & 0xff;
    r[at + 5] = (dest >>> 8) & 0xff;
    r[at + 6] = (dest >>> 16) & 0xff;
    r[at + 7] = (dest >>> 24) & 0xff;
    this.routeCount++;
  }

  /** Append a built frame for `port` (no offloads: the server fills checksums). */
  build(port: number, frame: Uint8Array): void {
    const need = 16 + frame.length;
    if (this.builtLen + need > this.built.length) {
      let size = this.built.length * 2;
      while (size < this.builtLen + need) size *= 2;
      const bigger = new Uint8Array(size);
      bigger.set(this.built.subarray(0, this.builtLen));
      this.built = bigger;
    }
    const b = this.built;
    const at = this.builtLen;
    b[at] = port & 0xff;
    b[at + 1] = (port >>> 8) & 0xff;
    b[at + 2] = (port >>> 16) & 0xff;
    b[at + 3] = (port >>> 24) & 0xff;
    b[at + 4] = frame.length & 0xff;
    b[at + 5] = frame.length >>> 8;
    b.fill(0, at + 6, at + 16); // virtio-net header: no offloads
    b.set(frame, at + 16);
    this.builtLen += need;
    this.builtCount++;
  }

  routeBytes(): Uint8Array {
    return this.routes.subarray(0, this.routeCount * 8);
  }

  builtBytes(): Uint8Array {
    return this.built.subarray(0, this.builtLen);
  }
}

function u16(b: Uint8Array, at: number): number {
  return (b[at] << 8) | b[at + 1];
}

function u32(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
}

function mac(b: Uint8Array, at: number): number {
  return ((b[at] << 8) | b[at + 1]) * 0x1_0000_0000 + u32(b, at + 2);
}

function putMac(b: Uint8Array, at: number, m: number): void {
  const hi = Math.floor(m / 0x1_0000_0000);
  b[at] = (hi >>> 8) & 0xff;
  b[at + 1] = hi & 0xff;
  putU32(b, at + 2, m >>> 0);
}

function putU16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24;
  b[at + 1] = (v >>> 16) & 0xff;
  b[at + 2] = (v >>> 8) & 0xff;
  b[at + 3] = v & 0xff;
}

function csum(b: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (b[i] << 8) | b[i + 1];
  if (i < end) sum += b[i] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** A pending portmap lookup and what to do with its answer. */
interface Pending {
  frame: InFrame;
  key: LookupKey;
  /** 'in': deliver to the holder; 'out': check the app holds its source port. */
  dir: 'in' | 'out';
  /** For 'in' from the NIC on a closed port: how to answer. */
  l4At: number;
  proto: number;
}

export class Forwarder {
  private ports: PortView[] = [];
  private byMac = new Map<number, PortView>();
  private byIp = new Map<number, PortView>();
  private byPort = new Map<number, PortView>();
  private sharedPorts: PortView[] = [];
  readonly counters = new Map<string, number>();
  private pending: Pending[] = [];
  private ipIdent = 1;

  constructor(readonly cfg: ServerConfig) {}

  count(what: string, n = 1): void {
    this.counters.set(what, (this.counters.get(what) ?? 0) + n);
  }

  setPorts(ports: PortView[]): void {
    this.ports = ports;
    this.byMac.clear();
    this.byIp.clear();
    this.byPort.clear();
    this.sharedPorts = [];
    for (const p of ports) {
      this.byPort.set(p.port, p);
      if (p.port === NIC_PORT) continue;
      if (p.ip !== null) {
        this.byIp.set(p.ip, p);
        this.byMac.set(p.mac, p);
      } else this.sharedPorts.push(p);
    }
  }

  private drop(d: Decisions, f: InFrame, reason: DropReason): void {
    this.count(`drop.${reason}`);
    d.route(f.id, DROP_BASE + DROP_REASONS.indexOf(reason));
  }

  private to(d: Decisions, f: InFrame, port: number): void {
    this.count(port === NIC_PORT ? 'to.nic' : 'to.app');
    d.route(f.id, port);
  }

  private isBroadcastIp(ip: number): boolean {
    if (ip === 0xffffffff) return true;
    const host = this.cfg.prefixLen >= 32 ? 0 : 0xffffffff >>> this.cfg.prefixLen;
    return host !== 0 && (ip & host) >>> 0 === host && ((ip ^ this.cfg.sharedIp) >>> 0) >>> (32 - this.cfg.prefixLen) === 0;
  }

  /**
   * Decide every frame of a batch. `lookup` answers portmap keys with the
   * port holding each (one call per batch).
   */
  decide(frames: InFrame[], lookup: (keys: LookupKey[]) => (number | undefined)[], d: Decisions): void {
    this.pending.length = 0;
    for (const f of frames) this.decideOne(f, d);
    if (this.pending.length === 0) return;
    const answers = lookup(this.pending.map((p) => p.key));
    for (let i = 0; i < this.pending.length; i++) this.finish(this.pending[i], answers[i], d);
    this.pending.length = 0;
  }

  private decideOne(f: InFrame, d: Decisions): void {
    const h = f.head;
    this.count('rx.frames');
    if (h.length < 14 || f.len < 14) return this.drop(d, f, 'malformed');
    const ethertype = u16(h, 12);
    const fromNic = f.port === NIC_PORT;
    const src = fromNic ? null : this.byPort.get(f.port);
    if (!fromNic && !src) return this.drop(d, f, 'filtered');
    if (fromNic) {
      const dst = mac(h, 0);
      const group = (h[0] & 1) === 1;
      if (!group && dst !== this.cfg.nicMac && !this.byMac.has(dst)) return this.drop(d, f, 'not-ours');
    }
    if (ethertype === ETH_ARP) return this.arp(f, src ?? null, d);
    if (ethertype === ETH_IPV4) return this.ipv4(f, src ?? null, d);
    if (fromNic) return this.drop(d, f, 'unsupported');
    return this.to(d, f, NIC_PORT); // other protocols from an app go out as they are
  }

  // ---- ARP -------------------------------------------------------------

  private arp(f: InFrame, src: PortView | null, d: Decisions): void {
    const h = f.head;
    if (h.length < 42) return this.drop(d, f, 'malformed');
    if (u16(h, 14) !== 1 || u16(h, 16) !== ETH_IPV4 || h[18] !== 6 || h[19] !== 4) return this.drop(d, f, 'unsupported');
    const op = u16(h, 20);
    const senderMac = mac(h, 22);
    const senderIp = u32(h, 28);
    const targetIp = u32(h, 38);
    if (src) {
      // From an app: it must speak for its own address.
      const own = src.ip ?? this.cfg.sharedIp;
      if (senderIp !== own || senderMac !== src.mac) return this.drop(d, f, 'filtered');
      if (op === 1 && targetIp === this.cfg.sharedIp && src.ip !== null) {
        this.arpReply(src.port, f, d);
        return;
      }
      const local = this.byIp.get(targetIp);
      if (local && local.port !== src.port) return this.to(d, f, local.port);
      return this.to(d, f, NIC_PORT);
    }
    if (targetIp === this.cfg.sharedIp) {
      if (op === 1) return this.arpReply(NIC_PORT, f, d);
      // A reply for the shared IP: every app on it may be resolving.
      return this.toShared(f, d);
    }
    const app = this.byIp.get(targetIp);
    if (app) return this.to(d, f, app.port);
    return this.drop(d, f, 'not-ours');
  }

  /** Answer an ARP request for the shared IP with the NIC's MAC. */
  private arpReply(port: number, f: InFrame, d: Decisions): void {
    const h = f.head;
    const b = new Uint8Array(42);
    b.set(h.subarray(6, 12), 0); // to the requester
    putMac(b, 6, this.cfg.nicMac);
    putU16(b, 12, ETH_ARP);
    b.set([0, 1, 8, 0, 6, 4, 0, 2], 14);
    putMac(b, 22, this.cfg.nicMac);
    putU32(b, 28, this.cfg.sharedIp);
    b.set(h.subarray(22, 32), 32); // target: the requester's MAC and IP
    d.build(port, b);
    d.route(f.id, CONSUMED);
    this.count('arp.replied');
  }

  /** Copy a frame to every app on the shared IP. */
  private toShared(f: InFrame, d: Decisions): void {
    if (this.sharedPorts.length === 0) return this.drop(d, f, 'no-listener');
    if (this.sharedPorts.length === 1 || f.head.length < f.len) {
      // One app, or a frame we cannot copy whole: it goes to the first.
      return this.to(d, f, this.sharedPorts[0].port);
    }
    for (let i = 1; i < this.sharedPorts.length; i++) d.build(this.sharedPorts[i].port, f.head.slice(0, f.len));
    this.to(d, f, this.sharedPorts[0].port);
  }

  // ---- IPv4 ------------------------------------------------------------

  private ipv4(f: InFrame, src: PortView | null, d: Decisions): void {
    const h = f.head;
    if (h.length < 34) return this.drop(d, f, 'malformed');
    const vihl = h[14];
    const ihl = (vihl & 0xf) * 4;
    if (vihl >> 4 !== 4 || ihl < 20 || h.length < 14 + ihl) return this.drop(d, f, 'malformed');
    const total = u16(h, 16);
    if (total < ihl || 14 + total > f.len) return this.drop(d, f, 'malformed');
    const proto = h[23];
    const ipSrc = u32(h, 26);
    const ipDst = u32(h, 30);
    const frag = u16(h, 20);
    const fragmented = (frag & 0x2000) !== 0 || (frag & 0x1fff) !== 0;
    const l4At = 14 + ihl;

    if (src) {
      const own = src.ip ?? this.cfg.sharedIp;
      if (ipSrc !== own) return this.drop(d, f, 'filtered');
      // Hairpin: another local app, or the shared IP from a dedicated app.
      const local = this.byIp.get(ipDst);
      if (local && local.port !== src.port) return this.to(d, f, local.port);
      if (ipDst === this.cfg.sharedIp && src.ip !== null) return this.toSharedIp(f, proto, l4At, fragmented, d);
      if (this.isBroadcastIp(ipDst)) {
        this.count('flood');
        return d.route(f.id, FLOOD);
      }
      if (src.ip === null && (proto === PROTO_TCP || proto === PROTO_UDP) && !fragmented) {
        if (h.length < l4At + 4) return this.drop(d, f, 'malformed');
        // An app on the shared IP may send only from ports it holds.
        this.pending.push({ frame: f, key: { proto: proto === PROTO_TCP ? 'tcp' : 'udp', port: u16(h, l4At) }, dir: 'out', l4At, proto });
        return;
      }
      return this.to(d, f, NIC_PORT);
    }

    // From the NIC.
    const app = this.byIp.get(ipDst);
    if (app) return this.to(d, f, app.port);
    if (ipDst === this.cfg.sharedIp) return this.toSharedIp(f, proto, l4At, fragmented, d);
    if (this.isBroadcastIp(ipDst)) {
      this.count('flood');
      return d.route(f.id, FLOOD);
    }
    return this.drop(d, f, 'not-ours');
  }

  /** A datagram for the shared IP: by protocol and port. */
  private toSharedIp(f: InFrame, proto: number, l4At: number, fragmented: boolean, d: Decisions): void {
    const h = f.head;
    if (fragmented) return this.drop(d, f, 'fragment');
    if (proto === PROTO_TCP || proto === PROTO_UDP) {
      if (h.length < l4At + 4) return this.drop(d, f, 'malformed');
      this.pending.push({ frame: f, key: { proto: proto === PROTO_TCP ? 'tcp' : 'udp', port: u16(h, l4At + 2) }, dir: 'in', l4At, proto });
      return;
    }
    if (proto === PROTO_ICMP) {
      if (h.length < l4At + 8) return this.drop(d, f, 'malformed');
      const type = h[l4At];
      if (type === 8) return this.pingReply(f, l4At, d);
      if ((type === 3 || type === 11) && h.length >= l4At + 8 + 20 + 4) {
        // An error about a datagram an app sent: to the app holding its source port.
        const inner = l4At + 8;
        const innerProto = h[inner + 9];
        const innerL4 = inner + (h[inner] & 0xf) * 4;
        if ((innerProto === PROTO_TCP || innerProto === PROTO_UDP) && h.length >= innerL4 + 2) {
          this.pending.push({ frame: f, key: { proto: innerProto === PROTO_TCP ? 'tcp' : 'udp', port: u16(h, innerL4) }, dir: 'in', l4At, proto: PROTO_ICMP });
          return;
        }
      }
      return this.drop(d, f, 'no-listener');
    }
    return this.drop(d, f, 'unsupported');
  }

  private finish(p: Pending, holder: number | undefined, d: Decisions): void {
    const f = p.frame;
    if (p.dir === 'out') {
      if (holder === f.port) return this.to(d, f, NIC_PORT);
      return this.drop(d, f, 'filtered');
    }
    if (holder !== undefined && this.byPort.has(holder)) return this.to(d, f, holder);
    // A closed port on the shared IP: answer as a kernel would.
    if (p.proto === PROTO_TCP) this.tcpReset(f, p.l4At, d);
    else if (p.proto === PROTO_UDP) this.portUnreachable(f, d);
    this.drop(d, f, 'no-listener');
  }

  // ---- Replies built by the server ------------------------------------

  private ipHeader(b: Uint8Array, src: number, dst: number, proto: number, payloadLen: number, df: boolean): void {
    b[14] = 0x45;
    b[15] = 0;
    putU16(b, 16, 20 + payloadLen);
    this.ipIdent = (this.ipIdent + 1) & 0xffff;
    putU16(b, 18, this.ipIdent);
    putU16(b, 20, df ? 0x4000 : 0);
    b[22] = 64;
    b[23] = proto;
    putU16(b, 24, 0);
    putU32(b, 26, src);
    putU32(b, 30, dst);
    putU16(b, 24, csum(b, 14, 34));
  }

  private ethReply(b: Uint8Array, h: Uint8Array, type: number): void {
    b.set(h.subarray(6, 12), 0);
    putMac(b, 6, this.cfg.nicMac);
    putU16(b, 12, type);
  }

  /** RFC 9293 3.10.7.1: <SEQ=SEG.ACK><CTL=RST>, or <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. */
  private tcpReset(f: InFrame, l4At: number, d: Decisions): void {
    const h = f.head;
    if (h.length < l4At + 20) return;
    const flags = h[l4At + 13];
    if (flags & 0x04) return; // never answer a reset
    const ipTotal = u16(h, 16);
    const ihl = (h[14] & 0xf) * 4;
    const thl = (h[l4At + 12] >> 4) * 4;
    const segLen = ipTotal - ihl - thl + (flags & 0x02 ? 1 : 0) + (flags & 0x01 ? 1 : 0);
    const b = new Uint8Array(54);
    this.ethReply(b, h, ETH_IPV4);
    this.ipHeader(b, this.cfg.sharedIp, u32(h, 26), PROTO_TCP, 20, true);
    const t = 34;
    b.set(h.subarray(l4At + 2, l4At + 4), t); // source port: their destination
    b.set(h.subarray(l4At, l4At + 2), t + 2);
    if (flags & 0x10) {
      b.set(h.subarray(l4At + 8, l4At + 12), t + 4); // seq = their ack
      b[t + 13] = 0x04;
    } else {
      putU32(b, t + 8, (u32(h, l4At + 4) + segLen) >>> 0);
      b[t + 13] = 0x14;
    }
    b[t + 12] = 5 << 4;
    const pseudo = (this.cfg.sharedIp >>> 16) + (this.cfg.sharedIp & 0xffff) + u16(h, 26) + u16(h, 28) + PROTO_TCP + 20;
    putU16(b, t + 16, csum(b, t, t + 20, pseudo));
    d.build(f.port, b); // back where it came from: the NIC, or an app on a hairpin
    this.count('tcp.rst-sent');
  }

  /** ICMP destination unreachable, port unreachable, quoting the IP header and 8 bytes. */
  private portUnreachable(f: InFrame, d: Decisions): void {
    const h = f.head;
    const ihl = (h[14] & 0xf) * 4;
    const quote = Math.min(ihl + 8, h.length - 14);
    const b = new Uint8Array(14 + 20 + 8 + quote);
    this.ethReply(b, h, ETH_IPV4);
    this.ipHeader(b, this.cfg.sharedIp, u32(h, 26), PROTO_ICMP, 8 + quote, false);
    b[34] = 3;
    b[35] = 3;
    b.set(h.subarray(14, 14 + quote), 42);
    putU16(b, 36, csum(b, 34, b.length));
    d.build(f.port, b);
    this.count('icmp.unreachable-sent');
  }

  /** Ping on the shared IP: the reply is built whole (the request fits the head). */
  private pingReply(f: InFrame, l4At: number, d: Decisions): void {
    const h = f.head;
    const total = u16(h, 16);
    const ihl = (h[14] & 0xf) * 4;
    const icmpLen = total - ihl;
    // Shorter than an echo header (Ethernet padding can hide that): malformed.
    if (icmpLen < 8) return this.drop(d, f, 'malformed');
    if (h.length < l4At + icmpLen || f.len < l4At + icmpLen) {
      // Larger than the head: cannot echo what we do not hold.
      return this.drop(d, f, 'unsupported');
    }
    const b = new Uint8Array(34 + icmpLen);
    this.ethReply(b, h, ETH_IPV4);
    this.ipHeader(b, this.cfg.sharedIp, u32(h, 26), PROTO_ICMP, icmpLen, false);
    b.set(h.subarray(l4At, l4At + icmpLen), 34);
    b[34] = 0;
    putU16(b, 36, 0);
    putU16(b, 36, csum(b, 34, 34 + icmpLen));
    d.build(f.port, b);
    d.route(f.id, CONSUMED);
    this.count('icmp.echo-replied');
  }
}
