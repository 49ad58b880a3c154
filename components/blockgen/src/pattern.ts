/**
 * The crash writer's block format, shared by the writer (in the app) and
 * the checker (in the test, reading the backing file from Linux).
 *
 * A block written at generation `gen` to namespace block `lba` holds a
 * 24-byte header (magic "LBCW", 4 bytes of zero, lba and gen as
 * little-endian u64) and then bytes that are a function of (lba, gen, i),
 * so a torn or misplaced block is caught anywhere in it, not only in the
 * header.
 */
export const MAGIC = 0x5743424c; // "LBCW" little-endian

export function fillBlock(out: Uint8Array, lba: number, gen: number): void {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, 0, true);
  dv.setUint32(8, lba >>> 0, true);
  dv.setUint32(12, Math.floor(lba / 2 ** 32), true);
  dv.setUint32(16, gen >>> 0, true);
  dv.setUint32(20, Math.floor(gen / 2 ** 32), true);
  let x = (Math.imul(lba ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(gen, 0xc2b2ae35)) >>> 0;
  for (let i = 24; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
}

/** The (lba, gen) a block claims, if it is whole; null if torn or foreign. */
export function checkBlock(block: Uint8Array): { lba: number; gen: number } | null {
  const dv = new DataView(block.buffer, block.byteOffset, block.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) return null;
  const lba = dv.getUint32(8, true) + dv.getUint32(12, true) * 2 ** 32;
  const gen = dv.getUint32(16, true) + dv.getUint32(20, true) * 2 ** 32;
  const want = new Uint8Array(block.length);
  fillBlock(want, lba, gen);
  for (let i = 0; i < block.length; i++) if (want[i] !== block[i]) return null;
  return { lba, gen };
}

/** The distinct blocks cycle `gen` writes, from a seed of its own. */
export function cycleBlocks(gen: number, count: number, blocks: number): number[] {
  let s = (gen * 2654435761) >>> 0 || 1;
  const seen = new Set<number>();
  const out: number[] = [];
  while (out.length < Math.min(count, blocks)) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const lba = s % blocks;
    if (seen.has(lba)) continue;
    seen.add(lba);
    out.push(lba);
  }
  return out;
}
