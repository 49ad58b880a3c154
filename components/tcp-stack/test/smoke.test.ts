import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pair, B_IP } from './harness.ts';
import type { TcpConnection } from '../src/socket/tcp.ts';
import type { TcpListener } from '../src/stack.ts';

test('two stacks: handshake, data both ways, graceful close', () => {
  const { wire, a, b } = pair({ seed: 1 });
  const l = b.stack.tcpListen(80, 16) as TcpListener;
  assert.type(l, 'object');
  let server: TcpConnection | null = null;
  const got: number[] = [];
  b.app = (n) => {
    if (!server) server = n.stack.accept(l);
    if (server) {
      const d = server.read(1 << 20);
      for (const x of d) got.push(x);
      if (d.length) server.write(d); // echo
      if (server.atEof() && server.state === 'CLOSE-WAIT') n.stack.close(server);
    }
  };
  const c = a.stack.tcpConnect(B_IP, 80) as TcpConnection;
  const echoed: number[] = [];
  let wrote = false;
  a.app = (n) => {
    if (c.state === 'ESTABLISHED' && !wrote) {
      assert.is(c.write(new TextEncoder().encode('hello, libretto')), 15);
      wrote = true;
    }
    for (const x of c.read(1 << 20)) echoed.push(x);
    if (echoed.length === 15 && c.state === 'ESTABLISHED') n.stack.close(c);
  };
  wire.run(5e9, () => c.state === 'TIME-WAIT' || c.state === 'CLOSED');
  assert.is(new TextDecoder().decode(new Uint8Array(got)), 'hello, libretto');
  assert.is(new TextDecoder().decode(new Uint8Array(echoed)), 'hello, libretto');
  assert.is(c.state, 'TIME-WAIT', c.describe());
  wire.run(wire.now + 1e9);
  assert.is(server!.state, 'CLOSED', server!.describe());
});

test('RFC 9293 MUST-46: no connection to broadcast or multicast addresses, or port 0', () => {
  const { a } = pair({ seed: 2 });
  for (const ip of [0xffffffff, 0x0a0000ff, 0xe0000001, 0]) {
    assert.is(a.stack.tcpConnect(ip, 80), 'invalid', `to ${ip.toString(16)}`);
  }
  assert.is(a.stack.tcpConnect(B_IP, 0), 'invalid', 'port 0');
  assert.is(a.stack.out.tx.count, 0, 'nothing sent, no ARP asked');
  assert.type(a.stack.tcpConnect(B_IP, 80), 'object');
});

test.run();
