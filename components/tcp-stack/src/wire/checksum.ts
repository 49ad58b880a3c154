/**
 * The Internet checksum (RFC 1071) over header bytes.
 *
 * Only headers pass through here: payload checksums are computed by the
 * link (transmit offload) or verified by it (receive offload). Inside
 * wasmtime JavaScript sums bytes at about 24 MB/s, so a stack that summed
 * payload would be capped near 0.2 Gbit/s.
 */

/** Add the 16-bit big-endian words of b[start, end) to `sum` (not folded). */
export function sumWords(b: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (b[i] << 8) | b[i + 1];
  if (i < end) sum += b[i] << 8;
  return sum;
}

/** Fold a running sum to 16 bits (end-around carry). */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The checksum field value: the one's complement of the folded sum. */
export function finish(sum: number): number {
  return ~fold(sum) & 0xffff;
}

/** The checksum of b[start, end). */
export function checksum(b: Uint8Array, start: number, end: number): number {
  return finish(sumWords(b, start, end));
}

/** The IPv4 pseudo-header sum for an L4 checksum (not folded). */
export function pseudoHeaderSum(src: number, dst: number, protocol: number, l4Length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + l4Length;
}
