/**
 * The frames of the `make run` demo: Ethernet frames of EtherType 0x88b5
 * carrying a sequence number, then a body taken from a shared pattern at an
 * offset derived from the sequence number.
 *
 * The sender builds only the 18 header bytes in JavaScript; the body is
 * gathered by the host from a byte queue holding the pattern, so payload
 * bytes never pass through JavaScript. A receiver checks the header and the
 * first body bytes that arrive in the frame's head.
 */
import { ETH_HEADER_LEN, ETHERTYPE_LOCAL_EXPERIMENTAL, writeMac, writeU16, writeU32, readU32, readU16, ETH_TYPE } from './ether.ts';

/** Sizes cycle through these (minimum Ethernet frame to full MTU). */
export const DEMO_SIZES = [60, 128, 590, 1514];
export const DEMO_HEADER_LEN = ETH_HEADER_LEN + 4;
/** Pattern bytes: enough for the largest body at the largest offset. */
export const PATTERN_LEN = 2048;
/** Body bytes a receiver checks (those within every frame's head). */
const CHECKED = 16;

/** The shared body pattern. */
export function demoPattern(): Uint8Array {
  const p = new Uint8Array(PATTERN_LEN);
  for (let i = 0; i < PATTERN_LEN; i++) p[i] = (i * 13 + (i >> 8)) & 0xff;
  return p;
}

export function demoLen(seq: number): number {
  return DEMO_SIZES[seq % DEMO_SIZES.length];
}

/** Where in the pattern the body of frame `seq` starts. */
export function demoOffset(seq: number): number {
  return seq % 251;
}

export function buildDemoHeader(seq: number, dst: number, src: number): Uint8Array {
  const h = new Uint8Array(DEMO_HEADER_LEN);
  writeMac(h, 0, dst);
  writeMac(h, 6, src);
  writeU16(h, ETH_TYPE, ETHERTYPE_LOCAL_EXPERIMENTAL);
  writeU32(h, ETH_HEADER_LEN, seq);
  return h;
}

/**
 * Check a demo frame's header and first body bytes. Returns the sequence
 * number, or -1 if the frame is not a good demo frame.
 */
export function checkDemoFrame(head: Uint8Array, len: number, pattern: Uint8Array): number {
  if (head.length < DEMO_HEADER_LEN + CHECKED || readU16(head, ETH_TYPE) !== ETHERTYPE_LOCAL_EXPERIMENTAL) return -1;
  const seq = readU32(head, ETH_HEADER_LEN);
  if (len !== demoLen(seq)) return -1;
  const off = demoOffset(seq);
  for (let i = 0; i < CHECKED; i++) if (head[DEMO_HEADER_LEN + i] !== pattern[off + i]) return -1;
  return seq;
}
