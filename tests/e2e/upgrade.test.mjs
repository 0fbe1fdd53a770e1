// HTTP Upgrade (WebSocket) through the gateway's one port: a WebSocket echo
// server in a real namespace sandbox, reached by the E2b-Sandbox-* headers
// and by Host routing; the 101 and its headers, bytes both ways (including
// bytes sent with the request and with the 101), close in both directions,
// half-close, and refused upgrades relayed as ordinary responses. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import crypto from 'node:crypto';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, sleep } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const PORT = 8765;
const LOG = '/tmp/ws_echo.log';
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

// A minimal RFC 6455 echo server, standard library only. Paths: /ready
// answers 200; /refuse answers 400 to anything. Upgrade "websocket": sends
// a greeting frame in the same write as its 101, echoes text and binary,
// answers "count:N" with N messages, "close-please" with a close of its
// own, pings with pongs and a close with a close. Upgrade "x-raw-echo":
// reads to EOF, then answers "got:<bytes>|bye" and closes. Every connection
// logs how it ended to the log file.
const SERVER = String.raw`
import asyncio, base64, hashlib, struct, sys

GUID = b"${GUID}"
LOG = sys.argv[2]
next_id = 0

def log(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")

def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload

async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    mask = await reader.readexactly(4) if b1 & 0x80 else None
    data = await reader.readexactly(n)
    if mask and n:
        key = (mask * (n // 4 + 1))[:n]
        data = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return b0 & 0x0F, data

async def respond(writer, status, body):
    writer.write(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                 % (status, len(body), body))
    await writer.drain()
    writer.close()

async def handle(reader, writer):
    global next_id
    next_id += 1
    cid = next_id
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    upgrade = headers.get("upgrade", "").lower()
    log("request %d %s upgrade=%s connection=%s" % (cid, path, upgrade, headers.get("connection", "").lower()))
    if path == "/ready":
        return await respond(writer, b"200 OK", b"ready")
    if path == "/refuse":
        return await respond(writer, b"400 Bad Request", b"no upgrade for you")
    if upgrade == "x-raw-echo":
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-raw-echo\r\nConnection: Upgrade\r\n\r\n")
        data = await reader.read()
        log("raw-eof %d" % cid)
        writer.write(b"got:" + data + b"|bye")
        await writer.drain()
        writer.close()
        return
    if upgrade != "websocket" or "sec-websocket-key" not in headers:
        return await respond(writer, b"426 Upgrade Required", b"websocket only")
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
    resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n"
    if "sec-websocket-protocol" in headers:
        resp += b"Sec-WebSocket-Protocol: " + headers["sec-websocket-protocol"].split(",")[0].strip().encode() + b"\r\n"
    resp += b"X-Echo-Conn: %d\r\n\r\n" % cid
    writer.write(resp + frame(1, b"hello %d" % cid))
    await writer.drain()
    try:
        while True:
            op, data = await read_frame(reader)
            if op == 1 and data.startswith(b"count:"):
                for i in range(int(data[6:])):
                    writer.write(frame(1, b"n=%d" % i))
            elif op == 1 and data == b"close-please":
                writer.write(frame(8, struct.pack("!H", 1001) + b"going away"))
                await writer.drain()
                log("server-close %d" % cid)
                break
            elif op in (1, 2):
                writer.write(frame(op, data))
            elif op == 9:
                writer.write(frame(10, data))
            elif op == 8:
                writer.write(frame(8, data[:2]))
                await writer.drain()
                log("close-frame %d" % cid)
                break
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        log("eof %d" % cid)
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
`;

let gw, sbx;
before(async () => {
  if (skip) return;
  gw = await startGateway();
  const { Sandbox } = await loadSdk();
  sbx = await Sandbox.create({ ...gw.opts });
  await sbx.files.write('/tmp/ws_echo.py', SERVER);
  await sbx.commands.run(`python3 /tmp/ws_echo.py ${PORT} ${LOG}`, { background: true, timeoutMs: 0 });
  for (let i = 0; ; i++) {
    const r = await fetch(`${gw.url}/ready`, { headers: byHeaders() });
    if (r.status === 200 && (await r.text()) === 'ready') break;
    if (i > 200) throw new Error(`echo server did not start: ${r.status}`);
    await sleep(50);
  }
});
after(async () => { await gw?.stop(); });

const byHeaders = (port = PORT) => ({ 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': String(port) });
const byHost = () => ({ Host: `${PORT}-${sbx.sandboxId}.coppice.test` });

async function until(pred, ms = 5000) {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(25);
  }
}
const serverLog = async () => (await sbx.files.read(LOG)).split('\n');

// A client frame: FIN set, masked as RFC 6455 requires of clients.
function encodeFrame(opcode, payload) {
  const data = Buffer.from(payload);
  const n = data.length;
  let head;
  if (n < 126) {
    head = Buffer.from([0x80 | opcode, 0x80 | n]);
  } else if (n < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 126;
    head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  const mask = crypto.randomBytes(4);
  const masked = Buffer.alloc(n);
  for (let i = 0; i < n; i++) masked[i] = data[i] ^ mask[i & 3];
  return Buffer.concat([head, mask, masked]);
}

// The client side of a connection after its response head: every byte
// received (starting with those that came with the head), read as raw bytes
// or as WebSocket frames from the server (unmasked), in order.
class Conn {
  constructor(socket, head) {
    this.socket = socket;
    this.buf = Buffer.from(head ?? []);
    this.waiters = [];
    this.ended = new Promise((r) => socket.once('end', r));
    this.closed = new Promise((r) => socket.once('close', r));
    socket.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    socket.on('error', () => {});
  }
  wake() { for (const w of this.waiters.splice(0)) w(); }
  async wait(pred, ms = 10000) {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error('nothing more from the server in time');
      await new Promise((r) => { this.waiters.push(r); setTimeout(r, 50); });
    }
  }
  // One whole frame off the front of what was received, or null.
  takeFrame() {
    const buf = this.buf;
    if (buf.length < 2) return null;
    assert.equal(buf[1] & 0x80, 0, 'server frames are not masked');
    let n = buf[1] & 0x7f;
    let off = 2;
    if (n === 126) { if (buf.length < 4) return null; n = buf.readUInt16BE(2); off = 4; }
    else if (n === 127) { if (buf.length < 10) return null; n = Number(buf.readBigUInt64BE(2)); off = 10; }
    if (buf.length < off + n) return null;
    this.buf = buf.subarray(off + n);
    return { opcode: buf[0] & 0x0f, data: buf.subarray(off, off + n) };
  }
  async next() {
    let f = null;
    await this.wait(() => (f = this.takeFrame()) !== null);
    return f;
  }
  async nextText() {
    const f = await this.next();
    assert.equal(f.opcode, 1);
    return f.data.toString();
  }
  send(opcode, data) { this.socket.write(encodeFrame(opcode, data)); }
}

function wsHeaders(key, extra = {}) {
  return { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Protocol': 'chat, superchat', ...extra };
}
const acceptFor = (key) => crypto.createHash('sha1').update(key + GUID).digest('base64');

// The handshake by hand over node:net, so that bytes can follow the request
// in the same write. Resolves to { status, headers, ws } once the head is in.
function rawOpen(path, headers, early = Buffer.alloc(0)) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(gw.port, '127.0.0.1');
    let got = Buffer.alloc(0);
    const onData = (d) => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      const lines = got.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const hs = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        hs[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({ status, headers: hs, ws: new Conn(socket, got.subarray(end + 4)) });
    };
    socket.on('data', onData);
    socket.once('error', reject);
    const all = { Host: `127.0.0.1:${gw.port}`, ...headers };
    const head = `GET ${path} HTTP/1.1\r\n` + Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n';
    socket.write(Buffer.concat([Buffer.from(head), early]));
  });
}

// The handshake with node's own HTTP client: 'upgrade' for a 101, else the
// whole response.
function httpOpen(path, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: gw.port, path, headers, agent: false });
    req.on('upgrade', (res, socket, head) => resolve({ status: res.statusCode, headers: res.headers, ws: new Conn(socket, head) }));
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test(`[${sdkName}] websocket by E2b-Sandbox-* headers: bytes sent with the request, messages both ways, 1 MiB, close from the client`, opt, async () => {
  const key = crypto.randomBytes(16).toString('base64');
  const { status, headers, ws } = await rawOpen('/chat', wsHeaders(key, byHeaders()), encodeFrame(1, 'sent with the request'));
  assert.equal(status, 101);
  assert.equal(headers.upgrade, 'websocket');
  assert.match(headers.connection, /upgrade/i);
  assert.equal(headers['sec-websocket-accept'], acceptFor(key));
  assert.equal(headers['sec-websocket-protocol'], 'chat');
  assert.equal(headers['content-length'], undefined);
  assert.equal(headers['transfer-encoding'], undefined);
  const cid = headers['x-echo-conn'];
  assert.equal(await ws.nextText(), `hello ${cid}`);  // written by the server with its 101
  assert.equal(await ws.nextText(), 'sent with the request');
  for (let i = 0; i < 20; i++) ws.send(1, `message ${i}`);
  for (let i = 0; i < 20; i++) assert.equal(await ws.nextText(), `message ${i}`);
  ws.send(1, 'count:5');
  for (let i = 0; i < 5; i++) assert.equal(await ws.nextText(), `n=${i}`);
  const every = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  ws.send(2, every);
  let f = await ws.next();
  assert.equal(f.opcode, 2);
  assert.deepEqual(Buffer.from(f.data), every);
  const big = crypto.randomBytes(1 << 20);
  ws.send(2, big);
  f = await ws.next();
  assert.equal(f.opcode, 2);
  assert.equal(f.data.length, big.length);
  assert.ok(Buffer.from(f.data).equals(big), '1 MiB binary message comes back intact');
  ws.send(9, 'ping');
  f = await ws.next();
  assert.deepEqual([f.opcode, f.data.toString()], [10, 'ping']);
  // The client closes: the server answers with its close and drops TCP, which reaches the client.
  const code = Buffer.alloc(2);
  code.writeUInt16BE(1000);
  ws.send(8, code);
  f = await ws.next();
  assert.equal(f.opcode, 8);
  assert.equal(f.data.readUInt16BE(0), 1000);
  await ws.ended;
  ws.socket.end();
  await ws.closed;
  await until(async () => (await serverLog()).includes(`close-frame ${cid}`));
  const req = (await serverLog()).find((l) => l.startsWith(`request ${cid} `));
  assert.equal(req, `request ${cid} /chat upgrade=websocket connection=upgrade`);
});

test('websocket by Host routing (node:http upgrade): messages, server-initiated close', opt, async () => {
  const key = crypto.randomBytes(16).toString('base64');
  const { status, headers, ws } = await httpOpen('/host', wsHeaders(key, byHost()));
  assert.equal(status, 101);
  assert.equal(headers['sec-websocket-accept'], acceptFor(key));
  const cid = headers['x-echo-conn'];
  assert.equal(await ws.nextText(), `hello ${cid}`);
  const payloads = ['a', 'ü ☃ text', 'x'.repeat(70000)];
  for (const p of payloads) ws.send(1, p);
  for (const p of payloads) assert.equal(await ws.nextText(), p);
  const big = crypto.randomBytes((1 << 20) + 3);
  ws.send(2, big);
  const f = await ws.next();
  assert.ok(Buffer.from(f.data).equals(big));
  ws.send(1, 'close-please');
  const c = await ws.next();
  assert.equal(c.opcode, 8);
  assert.equal(c.data.readUInt16BE(0), 1001);
  await ws.ended;  // the server's TCP close reaches the client
  ws.socket.end();
  await ws.closed;
  await until(async () => (await serverLog()).includes(`server-close ${cid}`));
});

test('a client that goes away is seen by the server', opt, async () => {
  const key = crypto.randomBytes(16).toString('base64');
  const { status, headers, ws } = await rawOpen('/gone', wsHeaders(key, byHeaders()));
  assert.equal(status, 101);
  const cid = headers['x-echo-conn'];
  assert.equal(await ws.nextText(), `hello ${cid}`);
  ws.send(1, 'still here');
  assert.equal(await ws.nextText(), 'still here');
  ws.socket.destroy();
  await until(async () => (await serverLog()).includes(`eof ${cid}`));
});

test('half-close: a client done sending still gets the answer (raw upgrade)', opt, async () => {
  for (const routing of [byHeaders(), byHost()]) {
    const { status, headers, ws } = await rawOpen('/raw', { Connection: 'upgrade', Upgrade: 'x-raw-echo', ...routing });
    assert.equal(status, 101);
    assert.equal(headers.upgrade, 'x-raw-echo');
    ws.socket.write('abc');
    await sleep(50);
    ws.socket.write('def');
    ws.socket.end();  // FIN: the server reads to EOF before it answers
    await ws.ended;
    await ws.closed;
    assert.equal(ws.buf.toString(), 'got:abcdef|bye');
  }
});

test('a refused upgrade is relayed as an ordinary response, and the connection closes', opt, async () => {
  for (const routing of [byHeaders(), byHost()]) {
    const key = crypto.randomBytes(16).toString('base64');
    const r = await httpOpen('/refuse', wsHeaders(key, routing));
    assert.equal(r.status, 400);
    assert.equal(r.body, 'no upgrade for you');
    assert.equal(r.headers['content-type'], 'text/plain');
    assert.equal(r.headers.connection, 'close');
    assert.equal(r.headers.upgrade, undefined);
  }
  // The same with bytes already sent after the request: they are not taken for HTTP.
  const { status, ws } = await rawOpen('/refuse', wsHeaders('AAAAAAAAAAAAAAAAAAAAAA==', byHeaders()), encodeFrame(1, 'early'));
  assert.equal(status, 400);
  await ws.ended;
  assert.equal(ws.buf.toString(), 'no upgrade for you');
  ws.socket.destroy();
  // A server that only speaks WebSocket answers other upgrades 426.
  const other = await httpOpen('/x', { Connection: 'upgrade', Upgrade: 'h2c', ...byHeaders() });
  assert.equal(other.status, 426);
});

test('upgrade requests to envd\'s port and to unknown sandboxes get their ordinary answers', opt, async () => {
  const plain = await fetch(`${gw.url}/health`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId } });
  const up = await httpOpen('/health', wsHeaders('AAAAAAAAAAAAAAAAAAAAAA==', { 'E2b-Sandbox-Id': sbx.sandboxId }));
  assert.equal(up.status, plain.status);
  assert.equal(up.headers.upgrade, undefined);
  assert.equal(up.headers.connection, 'close');
  const byHostEnvd = await httpOpen('/health', wsHeaders('AAAAAAAAAAAAAAAAAAAAAA==', { Host: `49983-${sbx.sandboxId}.coppice.test` }));
  assert.equal(byHostEnvd.status, plain.status);
  const missing = await httpOpen('/chat', wsHeaders('AAAAAAAAAAAAAAAAAAAAAA==', { 'E2b-Sandbox-Id': 'nosuchsandbox0000000', 'E2b-Sandbox-Port': String(PORT) }));
  assert.equal(missing.status, 502);
  assert.equal(missing.headers.connection, 'close');
  const noListener = await httpOpen('/chat', wsHeaders('AAAAAAAAAAAAAAAAAAAAAA==', byHeaders(PORT + 1)));
  assert.equal(noListener.status, 502);
  // The echo server still works afterwards.
  const again = await rawOpen('/again', wsHeaders(crypto.randomBytes(16).toString('base64'), byHeaders()));
  assert.equal(again.status, 101);
  assert.match(await again.ws.nextText(), /^hello /);
  again.ws.send(8, Buffer.from([0x03, 0xe8]));
  assert.equal((await again.ws.next()).opcode, 8);
  await again.ws.ended;
  again.ws.socket.end();
});
