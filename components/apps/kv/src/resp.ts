/**
 * RESP2, the Redis protocol, as Redis's own networking.c reads and writes
 * it: pure code, no I/O, so Node tests drive it with any split of input.
 *
 * Requests are either multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or
 * inline (`PING\r\n`, words split as redis-cli splits them, quotes and
 * all). The parser is fed chunks as they arrive and yields whole commands;
 * a command split anywhere (even inside `\r\n`) comes out the same. Big
 * bulk arguments are read into a buffer of their own, allocated once at
 * their final size, so a value is never copied while it arrives.
 *
 * Limits, as Redis's: an inline request or a count line longer than 64 KiB,
 * a multibulk count above 1,048,576 or a bulk length above
 * `maxBulk` (proto-max-bulk-len, 512 MiB by default) is a protocol error;
 * the server replies `-ERR Protocol error: ...` and closes the connection,
 * as Redis does.
 */

export const INLINE_MAX = 64 * 1024;
export const MULTIBULK_MAX = 1024 * 1024;
export const DEFAULT_MAX_BULK = 512 * 1024 * 1024;
/**
 * What one small byte array costs QuickJS beyond its bytes (the object,
 * its ArrayBuffer, their allocations), as measured on a 64-bit build: a
 * 1-byte slice takes about 400 bytes. Used to bound memory held by input.
 */
export const ARG_OVERHEAD = 400;
/** A bulk argument this long or longer is read into a buffer of its own. */
export const BIG_ARG = 32 * 1024;

const CR = 13;
const INCOMPLETE = -Infinity;
const LF = 10;

export class ProtocolError extends Error {}

/** One parsed command: its arguments as bytes (args[0] is the name). */
export type Command = Uint8Array[];

export class Parser {
  private buf: Uint8Array;
  /** Our own buffer, for input that arrives in pieces. */
  private own: Uint8Array;
  private start = 0;
  private end = 0;
  /** Arguments still expected by the multibulk in progress; -1 when none. */
  private argc = -1;
  private args: Uint8Array[] = [];
  /** Bytes held by `args` (with ARG_OVERHEAD a piece for the objects), for `pending`. */
  private argBytes = 0;
  /** A big bulk argument being filled, with its \r\n (length + 2). */
  private big: Uint8Array | null = null;
  private bigFill = 0;
  /** Where the line `number` read ends (its \r). */
  private lineEnd = 0;
  /** `buf` is a chunk given to `feed`, not ours to write into. */
  private borrowed = false;
  /** Set once a protocol error was reported: nothing more is parsed. */
  failed = false;

  constructor(
    readonly maxBulk = DEFAULT_MAX_BULK,
    initial = 16 * 1024,
    /** Asked before a big argument's buffer is allocated; false refuses it (a protocol error). */
    private admit: (len: number) => boolean = () => true,
  ) {
    this.own = new Uint8Array(Math.max(16, initial));
    this.buf = this.own;
  }

  /** Bytes received and not yet turned into commands (a memory bound's input). */
  get pending(): number {
    return this.end - this.start + (this.big ? this.big.length : 0) + this.argBytes;
  }

  /** Take bytes as they arrived. The parser may keep `chunk` (it only reads it). */
  feed(chunk: Uint8Array): void {
    let data = chunk;
    if (this.big && this.bigFill < this.big.length) {
      const take = Math.min(data.length, this.big.length - this.bigFill);
      this.big.set(take === data.length ? data : data.subarray(0, take), this.bigFill);
      this.bigFill += take;
      if (take === data.length) return;
      data = data.subarray(take);
    }
    if (this.start === this.end) {
      // Nothing pending: parse the chunk where it is, without a copy.
      this.buf = data;
      this.borrowed = true;
      this.start = 0;
      this.end = data.length;
      return;
    }
    const live = this.end - this.start;
    if (this.borrowed || this.end + data.length > this.buf.length) {
      // Move what is pending to the start of our own buffer, grown if need be.
      if (this.own.length < live + data.length) {
        let size = this.own.length;
        while (size < live + data.length) size *= 2;
        this.own = new Uint8Array(size);
        this.own.set(this.buf.subarray(this.start, this.end));
      } else if (this.borrowed || this.start > 0) {
        this.own.set(this.buf.subarray(this.start, this.end));
      }
      this.buf = this.own;
      this.borrowed = false;
      this.start = 0;
      this.end = live;
    }
    this.buf.set(data, this.end);
    this.end += data.length;
  }

  /**
   * The next whole command, or null until more input arrives. Throws
   * ProtocolError for input Redis refuses (after which the connection is
   * to be closed). Empty inline lines and `*0` are skipped, as by Redis.
   */
  next(): Command | null {
    if (this.failed) return null;
    try {
      return this.parse();
    } catch (e) {
      if (e instanceof ProtocolError) this.failed = true;
      throw e;
    }
  }

  /** Shrink an idle connection's buffer back after a burst. */
  trim(): void {
    if (this.start !== this.end) return;
    if (this.own.length > 64 * 1024) this.own = new Uint8Array(16 * 1024);
    this.buf = this.own;
    this.borrowed = false;
    this.start = this.end = 0;
  }

  private parse(): Command | null {
    for (;;) {
      if (this.argc < 0) {
        if (this.start >= this.end) return null;
        if (this.buf[this.start] !== 42 /* '*' */) {
          const cmd = this.inline();
          if (cmd === null) return null;
          if (cmd.length === 0) continue;
          return cmd;
        }
        const count = this.number('too big mbulk count string');
        if (count === INCOMPLETE) return null;
        if (count !== count || count > MULTIBULK_MAX) throw new ProtocolError('invalid multibulk length');
        this.start = this.lineEnd + 2;
        if (count <= 0) continue;
        this.argc = count;
        this.args = [];
      }
      while (this.args.length < this.argc) {
        if (this.big) {
          if (this.bigFill < this.big.length) return null;
          this.args.push(this.big.subarray(0, this.big.length - 2));
          this.argBytes += this.big.length + ARG_OVERHEAD;
          this.big = null;
          this.bigFill = 0;
          continue;
        }
        if (this.start >= this.end) return null;
        if (this.buf[this.start] !== 36 /* '$' */) {
          throw new ProtocolError(`expected '$', got '${String.fromCharCode(this.buf[this.start])}'`);
        }
        // Lengths of one or two digits (most arguments) without the general reader.
        const b = this.buf;
        const s = this.start;
        const d1 = b[s + 1] - 48;
        let len: number;
        let next: number;
        if (b[s + 2] === CR && s + 3 < this.end && d1 >= 0 && d1 <= 9) {
          len = d1;
          next = s + 4;
        } else if (b[s + 3] === CR && s + 4 < this.end && d1 >= 1 && d1 <= 9 && b[s + 2] >= 48 && b[s + 2] <= 57) {
          len = d1 * 10 + b[s + 2] - 48;
          next = s + 5;
        } else {
          len = this.number('too big bulk count string');
          if (len === INCOMPLETE) return null;
          if (len !== len || len < 0 || len > this.maxBulk) throw new ProtocolError('invalid bulk length');
          next = this.lineEnd + 2;
        }
        if (len > this.maxBulk) throw new ProtocolError('invalid bulk length');
        if (len >= BIG_ARG && this.end - next < len + 2) {
          // Read the rest of this argument straight into its own buffer.
          if (!this.admit(len)) throw new ProtocolError(`bulk of ${len} bytes does not fit in the memory left (maxmemory)`);
          this.start = next;
          this.big = new Uint8Array(len + 2);
          const have = this.end - this.start;
          this.big.set(this.buf.subarray(this.start, this.end));
          this.bigFill = have;
          this.start = this.end = 0;
          return null;
        }
        if (this.end - next < len + 2) return null;
        this.start = next;
        this.args.push(this.buf.slice(this.start, this.start + len));
        this.argBytes += len + ARG_OVERHEAD;
        // Redis skips the two bytes after a bulk without looking at them.
        this.start += len + 2;
      }
      const cmd = this.args;
      this.args = [];
      this.argBytes = 0;
      this.argc = -1;
      return cmd;
    }
  }

  /**
   * The integer on the line at `start` after its type byte, as Redis's
   * string2ll reads it (no '+', no leading zeros), read in one pass that
   * also finds the line's end (`lineEnd`, the index of its \r).
   * INCOMPLETE until the whole line is in; NaN if it is not an integer.
   */
  private number(tooBig: string): number {
    const b = this.buf;
    const end = this.end;
    let i = this.start + 1;
    let neg = false;
    if (i < end && b[i] === 45 /* - */) {
      neg = true;
      i++;
    }
    const first = i;
    let v = 0;
    let ok = true;
    for (; i < end; i++) {
      const d = b[i] - 48;
      if (d < 0 || d > 9) {
        if (b[i] !== CR) {
          ok = false;
          const cr = b.indexOf(CR, i);
          i = cr < 0 || cr >= end ? end : cr;
        }
        break;
      }
      v = v * 10 + d;
    }
    if (i + 1 >= end) {
      if (end - this.start > INLINE_MAX) throw new ProtocolError(tooBig);
      return INCOMPLETE;
    }
    if (i - this.start > INLINE_MAX) throw new ProtocolError(tooBig);
    this.lineEnd = i;
    const digits = i - first;
    if (!ok || digits === 0 || digits > 15 || (b[first] === 48 && (digits > 1 || neg))) return NaN;
    return neg ? -v : v;
  }

  private inline(): Command | null {
    let lf = this.buf.indexOf(LF, this.start);
    if (lf >= this.end) lf = -1;
    if (lf < 0) {
      if (this.end - this.start > INLINE_MAX) throw new ProtocolError('too big inline request');
      return null;
    }
    let to = lf;
    if (to > this.start && this.buf[to - 1] === CR) to--;
    const from = this.start;
    this.start = lf + 1;
    const words = splitArgs(this.buf, from, to);
    if (words === null) throw new ProtocolError('unbalanced quotes in request');
    return words;
  }
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || c === 11 || c === 12;
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/**
 * Words of an inline request, as Redis's sdssplitargs splits them:
 * whitespace separates; "double quotes" take \n \r \t \b \a \\ \" and
 * \xHH escapes; 'single quotes' take \' only; a closing quote must be
 * followed by a space or the end. Null for unbalanced quotes.
 */
export function splitArgs(b: Uint8Array, from: number, to: number): Uint8Array[] | null {
  const out: Uint8Array[] = [];
  let i = from;
  for (;;) {
    while (i < to && isSpace(b[i])) i++;
    if (i >= to) return out;
    const word: number[] = [];
    let inq = false;
    let insq = false;
    let done = false;
    while (!done) {
      if (inq) {
        if (i >= to) return null;
        if (b[i] === 92 /* \ */ && b[i + 1] === 120 /* x */ && i + 3 < to && hexVal(b[i + 2]) >= 0 && hexVal(b[i + 3]) >= 0) {
          word.push(hexVal(b[i + 2]) * 16 + hexVal(b[i + 3]));
          i += 3;
        } else if (b[i] === 92 && i + 1 < to) {
          i++;
          const c = b[i];
          word.push(c === 110 ? 10 : c === 114 ? 13 : c === 116 ? 9 : c === 98 ? 8 : c === 97 ? 7 : c);
        } else if (b[i] === 34 /* " */) {
          if (i + 1 < to && !isSpace(b[i + 1])) return null;
          done = true;
        } else word.push(b[i]);
      } else if (insq) {
        if (i >= to) return null;
        if (b[i] === 92 && b[i + 1] === 39 /* ' */) {
          i++;
          word.push(39);
        } else if (b[i] === 39) {
          if (i + 1 < to && !isSpace(b[i + 1])) return null;
          done = true;
        } else word.push(b[i]);
      } else {
        if (i >= to) break;
        const c = b[i];
        if (isSpace(c)) done = true;
        else if (c === 34) inq = true;
        else if (c === 39) insq = true;
        else word.push(c);
      }
      if (i < to) i++;
    }
    out.push(Uint8Array.from(word));
  }
}

/**
 * Replies, appended to one growing buffer so that everything a batch of
 * commands answers goes out in one write.
 */
export class Writer {
  buf: Uint8Array;
  len = 0;

  constructor(initial = 16 * 1024) {
    this.buf = new Uint8Array(Math.max(16, initial));
  }

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.buf.subarray(0, this.len));
    this.buf = bigger;
  }

  raw(bytes: Uint8Array): void {
    this.room(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  /** Latin-1 text, no conversion table needed. */
  private ascii(s: string): void {
    this.room(s.length);
    const b = this.buf;
    let at = this.len;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      b[at++] = c < 256 ? c : 63;
    }
    this.len = at;
  }

  private crlf(): void {
    this.room(2);
    this.buf[this.len++] = CR;
    this.buf[this.len++] = LF;
  }

  /** `+OK` */
  simple(s: string): void {
    this.ascii(`+${s}\r\n`);
  }

  /** `-ERR ...`: `msg` carries its own code word (ERR, WRONGTYPE, ...). Newlines become spaces. */
  error(msg: string): void {
    this.ascii(`-${msg.replace(/[\r\n]+/g, ' ')}\r\n`);
  }

  /** A type byte, a number and \r\n: `:42\r\n`, `$3\r\n`, `*2\r\n`. */
  private head(type: number, n: number | bigint): void {
    const digits = String(n);
    this.room(digits.length + 3);
    const b = this.buf;
    let at = this.len;
    b[at++] = type;
    for (let i = 0; i < digits.length; i++) b[at++] = digits.charCodeAt(i);
    b[at++] = CR;
    b[at++] = LF;
    this.len = at;
  }

  integer(n: number | bigint): void {
    this.head(58 /* : */, n);
  }

  bulk(b: Uint8Array | null): void {
    if (b === null) {
      this.raw(NULL_BULK);
      return;
    }
    this.head(36 /* $ */, b.length);
    this.room(b.length + 2);
    this.buf.set(b, this.len);
    this.len += b.length;
    this.buf[this.len++] = CR;
    this.buf[this.len++] = LF;
  }

  bulkString(s: string): void {
    this.head(36, s.length);
    this.ascii(s);
    this.crlf();
  }

  array(n: number): void {
    this.head(42 /* * */, n);
  }

  nullArray(): void {
    this.raw(NULL_ARRAY);
  }

  /** What is written so far, and empty the writer. */
  take(): Uint8Array {
    const out = this.buf.slice(0, this.len);
    this.len = 0;
    return out;
  }

  /** Drop the first `n` bytes (they were sent). */
  consume(n: number): void {
    if (n >= this.len) {
      this.len = 0;
      if (this.buf.length > 1 << 20) this.buf = new Uint8Array(16 * 1024);
      return;
    }
    this.buf.copyWithin(0, n, this.len);
    this.len -= n;
  }

  view(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

const NULL_BULK = Uint8Array.of(36, 45, 49, 13, 10); // $-1\r\n
const NULL_ARRAY = Uint8Array.of(42, 45, 49, 13, 10); // *-1\r\n

/** A command in RESP2 multibulk form (for tests and clients). */
export function encodeCommand(...args: (string | Uint8Array)[]): Uint8Array {
  const w = new Writer();
  w.array(args.length);
  for (const a of args) {
    if (typeof a === 'string') w.bulkString(a);
    else w.bulk(a);
  }
  return w.take();
}
