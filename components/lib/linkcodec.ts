/**
 * The packed batch formats of `libretto:net/link` (wit/deps/net/link.wit):
 * receive descriptors, transmit descriptors with gather chunks, and
 * placements. One crossing moves a whole batch as one list of bytes.
 *
 * Everything is little-endian. Byte vectors shared with the host's codec
 * are in test/vectors/link.json.
 */

export const VNET_LEN = 10;
export const RX_DESC_LEN = 20;
export const TX_DESC_LEN = 14;
export const CHUNK_LEN = 20;
export const PLACEMENT_LEN = 24;

const F_NEEDS_CSUM = 1;
const F_DATA_VALID = 2;
const GSO_CODES = { none: 0, tcpv4: 1, 'udp-l4': 5 } as const;
export type GsoKind = keyof typeof GSO_CODES;

/** Offload metadata: a virtio-net header. */
export interface Offload {
  needsCsum: boolean;
  csumValid: boolean;
  gso: GsoKind;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export const NO_OFFLOAD: Offload = Object.freeze({
  needsCsum: false,
  csumValid: false,
  gso: 'none',
  hdrLen: 0,
  gsoSize: 0,
  csumStart: 0,
  csumOffset: 0,
});

/** A received frame: an id held in the host, its length and first bytes. */
export interface RxFrame {
  /** The frame id as an unsigned number (at or above 2^31). */
  id: number;
  len: number;
  offload: Offload;
  /** The frame's first bytes: a view into the batch, not a copy. */
  head: Uint8Array;
}

function decodeGso(code: number): GsoKind | null {
  return code === 0 ? 'none' : code === 1 ? 'tcpv4' : code === 5 ? 'udp-l4' : null;
}

export function readVnet(dv: DataView, at: number): Offload | null {
  const flags = dv.getUint8(at);
  const gso = decodeGso(dv.getUint8(at + 1));
  if (gso === null || (flags & ~(F_NEEDS_CSUM | F_DATA_VALID)) !== 0) return null;
  return {
    needsCsum: (flags & F_NEEDS_CSUM) !== 0,
    csumValid: (flags & F_DATA_VALID) !== 0,
    gso,
    hdrLen: dv.getUint16(at + 2, true),
    gsoSize: dv.getUint16(at + 4, true),
    csumStart: dv.getUint16(at + 6, true),
    csumOffset: dv.getUint16(at + 8, true),
  };
}

export function writeVnet(dv: DataView, at: number, o: Offload): void {
  dv.setUint8(at, (o.needsCsum ? F_NEEDS_CSUM : 0) | (o.csumValid ? F_DATA_VALID : 0));
  dv.setUint8(at + 1, GSO_CODES[o.gso]);
  dv.setUint16(at + 2, o.hdrLen, true);
  dv.setUint16(at + 4, o.gsoSize, true);
  dv.setUint16(at + 6, o.csumStart, true);
  dv.setUint16(at + 8, o.csumOffset, true);
}

/** Why a batch from the host could not be read. */
export class BatchError extends Error {}

/**
 * A cursor over a receive batch that allocates nothing per frame: `next()`
 * moves to the next frame and the fields describe it. For hot loops; use
 * `parseRx` where objects are handier.
 */
export class RxCursor {
  private dv: DataView;
  private at = 0;
  private nextAt = 0;
  /** The frame id (unsigned). */
  id = 0;
  /** The whole frame's length. */
  len = 0;
  /** virtio-net flags: 1 needs-csum, 2 csum-valid. */
  flags = 0;
  /** virtio-net gso type: 0 none, 1 tcpv4, 5 udp-l4. */
  gso = 0;
  gsoSize = 0;
  /** Where the frame's head starts in `bytes`, and how long it is. */
  headAt = 0;
  headLen = 0;

  constructor(readonly bytes: Uint8Array) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Move to the next frame; false at the end. Throws BatchError if cut short. */
  next(): boolean {
    const at = (this.at = this.nextAt);
    const b = this.bytes;
    if (at >= b.length) return false;
    if (at + RX_DESC_LEN > b.length) throw new BatchError(`receive descriptor cut short at byte ${at}`);
    const dv = this.dv;
    this.headLen = dv.getUint16(at + 18, true);
    this.headAt = at + RX_DESC_LEN;
    this.nextAt = this.headAt + this.headLen;
    if (this.nextAt > b.length) throw new BatchError(`receive head cut short at byte ${at}`);
    this.id = dv.getUint32(at, true);
    this.len = dv.getUint32(at + 4, true);
    this.flags = b[at + 8];
    this.gso = b[at + 9];
    this.gsoSize = dv.getUint16(at + 12, true);
    return true;
  }

  /** The current frame's full offload header. */
  offload(): Offload {
    const o = readVnet(this.dv, this.at + 8);
    if (!o) throw new BatchError(`unknown offload flags or gso type at byte ${this.at + 8}`);
    return o;
  }

  /** The current frame's head (a view). */
  head(): Uint8Array {
    return this.bytes.subarray(this.headAt, this.headAt + this.headLen);
  }
}

/**
 * Parse a receive batch. The heads are views into `batch`. Throws
 * BatchError on a descriptor cut short or an unknown offload code (the
 * host never sends one; a test may).
 */
export function parseRx(batch: Uint8Array): RxFrame[] {
  const dv = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  const out: RxFrame[] = [];
  let at = 0;
  while (at < batch.length) {
    if (at + RX_DESC_LEN > batch.length) throw new BatchError(`receive descriptor cut short at byte ${at}`);
    const headLen = dv.getUint16(at + 18, true);
    if (at + RX_DESC_LEN + headLen > batch.length) throw new BatchError(`receive head cut short at byte ${at}`);
    const offload = readVnet(dv, at + 8);
    if (!offload) throw new BatchError(`unknown offload flags or gso type at byte ${at + 8}`);
    out.push({
      id: dv.getUint32(at, true),
      len: dv.getUint32(at + 4, true),
      offload,
      head: batch.subarray(at + RX_DESC_LEN, at + RX_DESC_LEN + headLen),
    });
    at += RX_DESC_LEN + headLen;
  }
  return out;
}

/** Write a u64 held in a JS number (below 2^53) little-endian. */
function setU64(dv: DataView, at: number, x: number): void {
  dv.setUint32(at, x >>> 0, true);
  dv.setUint32(at + 4, Math.floor(x / 0x1_0000_0000), true);
}

/** A piece of an outgoing frame, gathered by the host. */
export type Chunk =
  | { queue: object; offset: number; len: number }
  | { frame: number; offset: number; len: number };

/**
 * A growable byte batch with the list of byte queues its entries name by
 * index (the `queues` argument of `send` and `place`).
 */
class Packer<Q extends object> {
  protected buf = new Uint8Array(1024);
  protected dv = new DataView(this.buf.buffer);
  protected used = 0;
  readonly queues: Q[] = [];
  private index = new Map<Q, number>();
  count = 0;

  protected room(n: number): number {
    if (this.used + n > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < this.used + n) size *= 2;
      const bigger = new Uint8Array(size);
      bigger.set(this.buf.subarray(0, this.used));
      this.buf = bigger;
      this.dv = new DataView(bigger.buffer);
    }
    const at = this.used;
    this.used += n;
    return at;
  }

  protected queueIndex(q: Q): number {
    let i = this.index.get(q);
    if (i === undefined) {
      i = this.queues.length;
      this.queues.push(q);
      this.index.set(q, i);
    }
    return i;
  }

  /** The batch so far (a view; valid until the next change). */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.used);
  }

  get byteLength(): number {
    return this.used;
  }

  reset(): void {
    this.used = 0;
    this.count = 0;
    this.queues.length = 0;
    this.index.clear();
  }
}

/** Builds a transmit batch for `link.send`. */
export class TxBatch<Q extends object = object> extends Packer<Q> {
  /**
   * Add a frame: header bytes, offloads, then chunks gathered by the host.
   * Throws RangeError for a header or chunk list longer than the format
   * holds (65,535 bytes, 65,535 chunks).
   */
  frame(head: Uint8Array, offload: Offload, chunks: readonly Chunk[] = []): void {
    if (head.length > 0xffff) throw new RangeError(`frame header of ${head.length} bytes: at most 65535 (put the rest in chunks)`);
    if (chunks.length > 0xffff) throw new RangeError(`${chunks.length} chunks in one frame: at most 65535`);
    const at = this.room(TX_DESC_LEN + head.length + chunks.length * CHUNK_LEN);
    const dv = this.dv;
    dv.setUint16(at, head.length, true);
    dv.setUint16(at + 2, chunks.length, true);
    writeVnet(dv, at + 4, offload);
    this.buf.set(head, at + TX_DESC_LEN);
    let c = at + TX_DESC_LEN + head.length;
    for (const chunk of chunks) {
      if ('queue' in chunk) {
        dv.setUint32(c, 0, true);
        dv.setUint32(c + 4, this.queueIndex(chunk.queue as Q), true);
      } else {
        dv.setUint32(c, 1, true);
        dv.setUint32(c + 4, chunk.frame >>> 0, true);
      }
      setU64(dv, c + 8, chunk.offset);
      dv.setUint32(c + 16, chunk.len >>> 0, true);
      c += CHUNK_LEN;
    }
    this.count++;
  }
}

/** Builds a placement list for `link.place`. */
export class Placements<Q extends object = object> extends Packer<Q> {
  /** Copy `len` bytes at `offset` of held frame `frame` into `queue` at stream offset `at`. */
  add(frame: number, offset: number, len: number, queue: Q, at: number): void {
    const p = this.room(PLACEMENT_LEN);
    const dv = this.dv;
    dv.setUint32(p, frame >>> 0, true);
    dv.setUint32(p + 4, offset >>> 0, true);
    dv.setUint32(p + 8, len >>> 0, true);
    dv.setUint32(p + 12, this.queueIndex(queue), true);
    setU64(dv, p + 16, at);
    this.count++;
  }
}

/** A transmit descriptor read back (for harnesses and tests; the host has its own parser). */
export interface TxFrameDesc {
  head: Uint8Array;
  offload: Offload;
  chunks: ({ queueIndex: number; offset: number; len: number } | { frame: number; offset: number; len: number })[];
}

/** Parse a transmit batch built by `TxBatch`. Throws BatchError if cut short. */
export function parseTx(batch: Uint8Array): TxFrameDesc[] {
  const dv = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  const out: TxFrameDesc[] = [];
  let at = 0;
  while (at < batch.length) {
    if (at + TX_DESC_LEN > batch.length) throw new BatchError(`transmit descriptor cut short at byte ${at}`);
    const headLen = dv.getUint16(at, true);
    const count = dv.getUint16(at + 2, true);
    const end = at + TX_DESC_LEN + headLen + count * CHUNK_LEN;
    if (end > batch.length) throw new BatchError(`transmit frame cut short at byte ${at}`);
    const offload = readVnet(dv, at + 4);
    if (!offload) throw new BatchError(`unknown offload at byte ${at + 4}`);
    const head = batch.subarray(at + TX_DESC_LEN, at + TX_DESC_LEN + headLen);
    const chunks: TxFrameDesc['chunks'] = [];
    for (let c = at + TX_DESC_LEN + headLen; c < end; c += CHUNK_LEN) {
      const kind = dv.getUint8(c);
      const ref = dv.getUint32(c + 4, true);
      const offset = dv.getUint32(c + 8, true) + dv.getUint32(c + 12, true) * 0x1_0000_0000;
      const len = dv.getUint32(c + 16, true);
      if (kind === 0) chunks.push({ queueIndex: ref, offset, len });
      else if (kind === 1) chunks.push({ frame: ref, offset, len });
      else throw new BatchError(`unknown chunk source ${kind} at byte ${c}`);
    }
    out.push({ head, offload, chunks });
    at = end;
  }
  return out;
}

/** A placement read back (for harnesses and tests). */
export function parsePlacements(batch: Uint8Array): { frame: number; offset: number; len: number; queueIndex: number; at: number }[] {
  if (batch.length % PLACEMENT_LEN !== 0) throw new BatchError('placements are not a whole number of 24-byte entries');
  const dv = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  const out = [];
  for (let p = 0; p < batch.length; p += PLACEMENT_LEN) {
    out.push({
      frame: dv.getUint32(p, true),
      offset: dv.getUint32(p + 4, true),
      len: dv.getUint32(p + 8, true),
      queueIndex: dv.getUint32(p + 12, true),
      at: dv.getUint32(p + 16, true) + dv.getUint32(p + 20, true) * 0x1_0000_0000,
    });
  }
  return out;
}
