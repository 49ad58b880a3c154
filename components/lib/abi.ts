/**
 * Crossing values between JavaScript and WIT the same way on both engines.
 *
 * Measured inside wasmtime (docs/ABI.md):
 *  - QuickJS passes u32 as i32 bits both ways: into JS a u32 at or above
 *    2^31 arrives negative; out of JS a positive number at or above 2^31
 *    saturates at 2^31-1, while the same bits as a negative int32 cross
 *    exactly. u64 is a JS number (exact to 2^53), and a BigInt traps.
 *  - StarlingMonkey gives u32 into JS exactly; out of JS a u32 at or above
 *    2^31 arrives wrong when it is a flat parameter or record field, and
 *    exactly inside a list. u64 is a BigInt both ways.
 *
 * So component code keeps every u64 as a number and converts at the
 * boundary with these helpers; WIT never passes a u32 that can reach 2^31
 * out of JS except inside a list. Stream offsets stay below 2^53. Times
 * (ns since the host started) pass 2^53 after 104 days: from then on they
 * arrive rounded to a double (to 2 ns, 4 ns, ...), which timers do not
 * notice, and no sentinel may sit at 2^53 (NO_DEADLINE is far above).
 */

export const BACKEND: string = typeof __LIBRETTO_BACKEND__ === 'string' ? __LIBRETTO_BACKEND__ : 'node';
export const IS_QUICKJS = BACKEND === 'quickjs';

/** A u64 as the engine passes it: BigInt (StarlingMonkey, Node) or number (QuickJS). */
export type U64 = bigint | number;

/** A u64 going out of JS: `x` must be an integer in [0, 2^53]. */
export const u64: (x: number) => U64 = IS_QUICKJS ? (x) => x : (x) => BigInt(x);

/** A u64 coming into JS, as a number (exact below 2^53). */
export function num(x: U64): number {
  return Number(x);
}

/** A u32 going out of JS, in the form the engine lowers exactly. */
export const u32: (x: number) => number = IS_QUICKJS ? (x) => x | 0 : (x) => x >>> 0;

/** A u32 coming into JS, as a number in [0, 2^32). */
export function u32in(x: number): number {
  return x >>> 0;
}

/**
 * "No deadline": u64's largest value where the engine passes it, else 2^62
 * (a double QuickJS lowers exactly; 146 years of host uptime), never 2^53,
 * which a host's clock reaches after 104 days.
 */
export const NO_DEADLINE: U64 = IS_QUICKJS ? 2 ** 62 : 2n ** 64n - 1n;
