/**
 * A minimal NBD client for the tests: the fixed newstyle handshake,
 * options, and simple-reply requests, byte by byte as proto.md gives
 * them, so a test can send what Debian's clients never would.
 */
import { connect, type Socket } from 'node:net';
import { INFO, OPT, REP, encodeRequest } from '../../components/apps/nbd/src/proto.ts';

export class Client {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  eof = false;
  private constructor(readonly sock: Socket) {
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    const end = () => {
      this.eof = true;
      this.wake?.();
    };
    sock.on('end', end);
    sock.on('close', end);
    sock.on('error', end);
  }

  static open(host: string, port: number): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = connect({ host, port }, () => resolve(new Client(s)));
      s.once('error', reject);
    });
  }

  /** Exactly `n` bytes, or null at end of stream; throws after `ms`. */
  async read(n: number, ms = 10_000): Promise<Buffer | null> {
    const t0 = Date.now();
    while (this.buf.length < n) {
      if (this.eof) return null;
      if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${n} bytes (have ${this.buf.length})`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 100);
      });
      this.wake = null;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  /** True if the server closes the connection within `ms` (sending nothing more). */
  async closedBy(ms = 10_000): Promise<boolean> {
    const t0 = Date.now();
    while (!this.eof && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 20));
    return this.eof;
  }

  write(b: Uint8Array): void {
    this.sock.write(b);
  }

  option(opt: number, data: Uint8Array = new Uint8Array(0)): void {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer } | null> {
    const h = await this.read(20);
    if (!h) return null;
    if (h.readBigUInt64BE(0) !== 0x3e889045565a9n) throw new Error(`bad option reply magic ${h.toString('hex')}`);
    const len = h.readUInt32BE(16);
    const data = (await this.read(len)) ?? Buffer.alloc(0);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data };
  }

  /** Greeting and client flags. */
  async hello(flags = 3): Promise<void> {
    const g = await this.read(18);
    if (!g || g.toString('latin1', 0, 16) !== 'NBDMAGICIHAVEOPT') throw new Error('bad greeting');
    const f = Buffer.alloc(4);
    f.writeUInt32BE(flags);
    this.write(f);
  }

  /** NBD_OPT_GO; returns the export size and flags. */
  async go(name = ''): Promise<{ size: number; flags: number; min: number }> {
    const d = Buffer.alloc(4 + name.length + 4);
    d.writeUInt32BE(name.length, 0);
    d.write(name, 4, 'latin1');
    d.writeUInt16BE(1, 4 + name.length);
    d.writeUInt16BE(INFO.BLOCK_SIZE, 6 + name.length);
    this.option(OPT.GO, d);
    let size = -1;
    let flags = 0;
    let min = 1;
    for (;;) {
      const r = await this.optionReply();
      if (!r) throw new Error('closed during NBD_OPT_GO');
      if (r.type === REP.ACK) return { size, flags, min };
      if (r.type !== REP.INFO) throw new Error(`NBD_OPT_GO: reply type 0x${r.type.toString(16)}`);
      const t = r.data.readUInt16BE(0);
      if (t === INFO.EXPORT) {
        size = Number(r.data.readBigUInt64BE(2));
        flags = r.data.readUInt16BE(10);
      } else if (t === INFO.BLOCK_SIZE) min = r.data.readUInt32BE(2);
    }
  }

  static async ready(host: string, port: number, name = ''): Promise<Client> {
    const c = await Client.open(host, port);
    await c.hello();
    await c.go(name);
    return c;
  }

  request(type: number, flags: number, cookie: number, offset: number, length: number, payload?: Uint8Array, magic?: number): void {
    const h = encodeRequest({ magic, flags, type, cookieHi: 0x1234, cookieLo: cookie, offset, length });
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  /** A simple reply: error and cookie; null at end of stream. */
  async reply(): Promise<{ error: number; cookie: number } | null> {
    const r = await this.read(16);
    if (!r) return null;
    if (r.readUInt32BE(0) !== 0x67446698) throw new Error(`bad reply magic ${r.toString('hex')}`);
    if (r.readUInt32BE(8) !== 0x1234) throw new Error('cookie high half changed');
    return { error: r.readUInt32BE(4), cookie: r.readUInt32BE(12) };
  }

  async readBlock(offset: number, length: number, cookie = 1): Promise<Buffer> {
    this.request(0 /* NBD_CMD_READ */, 0, cookie, offset, length);
    const r = await this.reply();
    if (!r || r.error !== 0 || r.cookie !== cookie) throw new Error(`read ${offset}+${length}: ${JSON.stringify(r)}`);
    return (await this.read(length))!;
  }

  close(): void {
    this.sock.destroy();
  }
}
