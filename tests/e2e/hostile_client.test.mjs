// Hostile clients at the gateway's one port, through the real E2B SDK and raw
// sockets: a flood of idle connections, a head that trickles in, framing that
// could smuggle a request past the proxy, sandbox ids that are not ids, and a
// sandbox that listens for its caller's credentials. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, sleep, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
let gw, Sandbox, sbx;

// A server in the sandbox on port 8000 that answers every request with the
// headers it got and the paths it has seen so far.
const echoServer = `
import json, http.server
seen = []
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def answer(self):
        n = int(self.headers.get('Content-Length') or 0)
        if n: self.rfile.read(n)
        seen.append(self.path)
        body = json.dumps({'headers': {k.lower(): v for k, v in self.headers.items()}, 'seen': seen}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', 8000), H).serve_forever()
`;

before(async () => {
  if (skip) return;
  gw = await startGateway({ extraArgs: ['--header-timeout', '1'] });
  ({ Sandbox } = await loadSdk());
  sbx = await Sandbox.create({ ...gw.opts });
  await sbx.files.write('/tmp/echo.py', echoServer);
  await sbx.commands.run('python3 /tmp/echo.py', { background: true, timeoutMs: 0 });
  for (let i = 0; ; i++) {
    const r = await fetch(`${gw.url}/ready`, { headers: port8000() });
    if (r.status === 200) break;
    if (i > 200) throw new Error(`the echo server did not start: ${r.status}`);
    await sleep(50);
  }
});
after(async () => { await gw?.stop(); });

const port8000 = (extra = {}) => ({ 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '8000', ...extra });

// Writes `data` (a latin1 string: every char one byte) on a fresh connection
// and resolves with all it reads until the gateway closes it, or `ms` pass.
function rawExchange(port, data, ms = 5000) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let out = Buffer.alloc(0);
    let closed = false;
    const t0 = Date.now();
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ text: out.toString('latin1'), closed, ms: Date.now() - t0 });
    };
    const timer = setTimeout(done, ms);
    s.on('connect', () => { if (data) s.write(Buffer.from(data, 'latin1')); });
    s.on('data', (d) => { out = Buffer.concat([out, d]); });
    s.on('end', () => { closed = true; done(); });
    s.on('error', () => { closed = true; done(); });
  });
}

test(`[${sdkName}] the proxy forwards no gateway credentials into a sandbox`, opt, async () => {
  let r = await fetch(`${gw.url}/creds`, {
    headers: port8000({ 'X-API-KEY': TEST_API_KEY, Authorization: `Bearer ${TEST_API_KEY}`, 'X-App': 'kept' }),
  });
  assert.equal(r.status, 200);
  let seen = (await r.json()).headers;
  assert.equal(seen['x-api-key'], undefined, 'the API key reached the sandbox');
  assert.equal(seen.authorization, undefined, 'a Bearer API key reached the sandbox');
  assert.equal(seen['x-app'], 'kept');
  // The app's own credentials are its business.
  r = await fetch(`${gw.url}/creds`, { headers: port8000({ Authorization: 'Bearer app-token' }) });
  seen = (await r.json()).headers;
  assert.equal(seen.authorization, 'Bearer app-token');
});

test('bytes that are not a sandbox id get a 400 with a message, never a 500', opt, async () => {
  const ids = ['\xff\xfe\xfd\xfc', 'a'.repeat(19) + '\xc0', '\xc0\xaf'.repeat(10), 'ABCDEFGHIJKLMNOPQRST', 'short', 'a'.repeat(21)];
  for (const id of ids) {
    const byHeader = await rawExchange(gw.port, `GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nE2b-Sandbox-Id: ${id}\r\n\r\n`);
    assert.match(byHeader.text, /^HTTP\/1\.1 400 /, JSON.stringify(id) + ' -> ' + byHeader.text);
    assert.match(byHeader.text, /\[a-z0-9\]/);
    const byHost = await rawExchange(gw.port, `GET / HTTP/1.1\r\nHost: 49983-${id}.coppice.test\r\nConnection: close\r\n\r\n`);
    assert.match(byHost.text, /^HTTP\/1\.1 400 /, JSON.stringify(id) + ' -> ' + byHost.text);
  }
  // A control character is refused by the HTTP parser itself.
  const ctl = await rawExchange(gw.port, `GET / HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: ${'a'.repeat(10)}\x01${'a'.repeat(9)}\r\n\r\n`);
  assert.match(ctl.text, /^HTTP\/1\.1 400 /, ctl.text);
  const health = await fetch(`${gw.url}/health`);
  assert.equal(health.status, 200);
});

test('framing that could smuggle a request is refused, and nothing reaches the sandbox', opt, async () => {
  const head = `Host: x\r\nE2b-Sandbox-Id: ${sbx.sandboxId}\r\nE2b-Sandbox-Port: 8000\r\n`;
  const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
  const attempts = [
    `POST /clte HTTP/1.1\r\n${head}Content-Length: ${5 + smuggled.length}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
    `POST /tecl HTTP/1.1\r\n${head}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`,
    `POST /clcl HTTP/1.1\r\n${head}Content-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
    `POST /tete HTTP/1.1\r\n${head}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${smuggled}`,
    `POST /fold HTTP/1.1\r\n${head}Transfer-Encoding: identity\r\n chunked\r\nContent-Length: 0\r\n\r\n${smuggled}`,
    `POST /http10 HTTP/1.0\r\n${head}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
  ];
  for (const a of attempts) {
    const r = await rawExchange(gw.port, a);
    assert.match(r.text, /^HTTP\/1\.1 (400|501) /, a + '\n-> ' + r.text);
    assert.equal((r.text.match(/HTTP\/1\.1 /g) || []).length, 1, 'one answer only: ' + r.text);
    assert.ok(r.closed, 'the connection is closed after a framing error');
  }
  const log = await (await fetch(`${gw.url}/log`, { headers: port8000() })).json();
  assert.deepEqual(log.seen.filter((p) => p !== '/ready' && p !== '/creds'), ['/log']);
});

test('a request head that trickles in is cut at the header deadline', opt, async () => {
  const s = net.connect(gw.port, '127.0.0.1');
  await new Promise((r) => s.on('connect', r));
  let out = '';
  let closed = false;
  s.on('data', (d) => { out += d.toString('latin1'); });
  s.on('close', () => { closed = true; });
  s.on('error', () => {});
  const t0 = Date.now();
  s.write('GET /health HTTP/1.1\r\nHost: x\r\n');
  // A header byte every 100 ms: slow, but never idle.
  for (let i = 0; i < 100 && !closed; i++) {
    s.write('X');
    await sleep(100);
  }
  const took = Date.now() - t0;
  s.destroy();
  assert.ok(closed, 'still open after 10 s');
  assert.match(out, /^HTTP\/1\.1 408 /, out);
  assert.ok(took < 5000, `cut after ${took} ms`);
});

test(`[${sdkName}] thousands of idle connections neither exhaust the fds nor keep the SDK out`, { ...opt, timeout: 180000 }, async () => {
  // A gateway with 1024 fds: it holds at most 384 connections (a quarter of
  // the fds kept for everything else, two fds a connection). Without bounds
  // it ran out of fds, stopped accepting, and every call timed out.
  const small = await startGateway({ prefix: ['prlimit', '--nofile=1024:1024', '--'] });
  const sockets = [];
  let closedByGateway = 0;
  try {
    for (let batch = 0; batch < 15; batch++) {
      const opened = [];
      for (let i = 0; i < 200; i++) {
        const s = net.connect(small.port, '127.0.0.1');
        s.on('error', () => {});
        s.on('close', () => { closedByGateway++; });
        sockets.push(s);
        opened.push(new Promise((r) => { s.on('connect', r); s.on('error', r); }));
      }
      await Promise.all(opened);
    }
    assert.equal(sockets.length, 3000);
    const t0 = Date.now();
    const health = await fetch(`${small.url}/health`, { signal: AbortSignal.timeout(10000) });
    assert.equal(health.status, 200);
    const box = await Sandbox.create({ ...small.opts, requestTimeoutMs: 30000 });
    try {
      const r = await box.commands.run('echo still here', { requestTimeoutMs: 30000 });
      assert.equal(r.stdout, 'still here\n');
    } finally {
      await box.kill();
    }
    assert.ok(Date.now() - t0 < 60000);
    // The idle ones gave way, oldest first; the gateway holds no more than its bound.
    await sleep(200);
    assert.ok(closedByGateway >= 3000 - 384, `only ${closedByGateway} of 3000 idle connections were closed`);
  } finally {
    for (const s of sockets) s.destroy();
    await small.stop();
  }
});
