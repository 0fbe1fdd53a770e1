// Inbound traffic to a sandbox's ports: network.allowPublicTraffic: false
// (the traffic access token), network.maskRequestHost, signed preview URLs
// and their cookie, and TLS on the gateway's port with the unmodified SDK in
// its default mode (https://api.<domain>, https://<port>-<id>.<domain>).
// Needs root (real sandboxes) and the openssl CLI. No name is resolved by the
// host's resolver: the TLS part runs the SDK in a child node process whose
// dns.lookup answers 127.0.0.1 for *.coppice.test and fails for anything else.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { startGateway, gatewaySkipReason, removeCgroupParents, removeStateDir, gatewayBin, loadSdk, sdkName, sleep, freePort, TEST_API_KEY, tlsFetch } from './lib/harness.mjs';

let skip = gatewaySkipReason();
try {
  execFileSync('openssl', ['version'], { stdio: 'ignore' });
} catch {
  skip ||= 'the openssl CLI is not installed (scripts/deps.sh)';
}
const opt = skip ? { skip } : {};
const PORT = 8000;
const MASK = 'masked.example:${PORT}';

// Answers every request with what it saw: Host, Cookie and any traffic
// token that reached it; an Upgrade to "x-echo" is answered 101 and then
// echoes bytes until EOF.
const SERVER = String.raw`
import asyncio, sys

async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            hdr = {}
            for line in head.decode("latin1").split("\r\n")[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    hdr[k.strip().lower()] = v.strip()
            if hdr.get("upgrade", "").lower() == "x-echo":
                w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\n")
                await w.drain()
                while True:
                    d = await r.read(65536)
                    if not d:
                        break
                    w.write(d)
                    await w.drain()
                break
            body = ("host=%s|cookie=%s|token=%s" % (hdr.get("host", ""), hdr.get("cookie", ""),
                    hdr.get("e2b-traffic-access-token", ""))).encode()
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await w.drain()
    except Exception:
        pass
    w.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
`;

async function startServer(sbx, reach) {
  await sbx.files.write('/tmp/echo_host.py', SERVER);
  await sbx.commands.run(`python3 /tmp/echo_host.py ${PORT}`, { background: true, timeoutMs: 0 });
  for (let i = 0; ; i++) {
    const r = await reach();
    if (r.status === 200) return;
    if (i > 200) throw new Error(`echo server did not start: ${r.status}`);
    await sleep(50);
  }
}

// A plain HTTP request to the gateway with any Host: { status, headers, body }.
function request(port, { path: p = '/', host, headers = {}, method = 'GET' } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method, headers: { ...headers, ...(host ? { Host: host } : {}) } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      });
    req.on('error', reject);
    req.end();
  });
}

const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-inbound-'));
let gw, sbx, open;
before(async () => {
  if (skip) return;
  gw = await startGateway({ stateDir });
  const { Sandbox } = await loadSdk();
  sbx = await Sandbox.create({ ...gw.opts, network: { allowPublicTraffic: false, maskRequestHost: MASK } });
  open = await Sandbox.create({ ...gw.opts });
  await startServer(sbx, () => request(gw.port, {
    headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': String(PORT), 'e2b-traffic-access-token': sbx.trafficAccessToken },
  }));
  await startServer(open, () => request(gw.port, { headers: { 'E2b-Sandbox-Id': open.sandboxId, 'E2b-Sandbox-Port': String(PORT) } }));
});
after(async () => {
  await gw?.stop();
  removeCgroupParents(stateDir);
  removeStateDir(stateDir);
});

const routeHeaders = (s, port = PORT) => ({ 'E2b-Sandbox-Id': s.sandboxId, 'E2b-Sandbox-Port': String(port) });

test('allowPublicTraffic: false: the traffic token is required on ports, not on envd', opt, async () => {
  assert.match(sbx.trafficAccessToken, /^[0-9a-f]{48}$/);
  const info = await (await fetch(`${gw.url}/sandboxes/${sbx.sandboxId}`, { headers: { 'X-API-KEY': TEST_API_KEY } })).json();
  assert.equal(info.trafficAccessToken, sbx.trafficAccessToken);
  const none = await request(gw.port, { headers: routeHeaders(sbx) });
  assert.equal(none.status, 403);
  assert.match(JSON.parse(none.body).message, /e2b-traffic-access-token/);
  const wrong = await request(gw.port, { headers: { ...routeHeaders(sbx), 'e2b-traffic-access-token': 'x'.repeat(48) } });
  assert.equal(wrong.status, 403);
  // By Host too, and the header name in any case (the code interpreter SDK sends E2B-Traffic-Access-Token).
  const ok = await request(gw.port, { host: `${PORT}-${sbx.sandboxId}.coppice.test`, headers: { 'E2B-Traffic-Access-Token': sbx.trafficAccessToken } });
  assert.equal(ok.status, 200);
  // The token is the gateway's: it never reaches the sandbox.
  assert.match(ok.body, /\|token=$/);
  // envd keeps its own rule: the SDK works without the traffic token.
  const r = await sbx.commands.run('echo envd-ok');
  assert.equal(r.stdout.trim(), 'envd-ok');
  // A sandbox with public traffic has no token and needs none.
  assert.equal(open.trafficAccessToken ?? null, null);
  assert.equal((await request(gw.port, { headers: routeHeaders(open) })).status, 200);
});

test('after kill -9 and a restart: the token, the mask and preview links still hold', opt, async () => {
  const made = await (await previewUrl(sbx.sandboxId, PORT, 600)).json();
  const link = new URL(made.url);
  await gw.kill9();
  gw = await startGateway({ stateDir });
  const info = await (await fetch(`${gw.url}/sandboxes/${sbx.sandboxId}`, { headers: { 'X-API-KEY': TEST_API_KEY } })).json();
  assert.equal(info.trafficAccessToken, sbx.trafficAccessToken);
  assert.equal((await request(gw.port, { headers: routeHeaders(sbx) })).status, 403);
  const ok = await request(gw.port, { headers: { ...routeHeaders(sbx), 'e2b-traffic-access-token': sbx.trafficAccessToken } });
  assert.equal(ok.status, 200);
  assert.match(ok.body, new RegExp(`^host=masked\\.example:${PORT}\\|`));
  // The signing secret is kept in the state dir: links made before the restart still open.
  const first = await request(gw.port, { host: `${PORT}-${sbx.sandboxId}.localhost`, path: link.pathname + link.search });
  assert.equal(first.status, 302);
  const mode = fs.statSync(path.join(stateDir, 'preview.key')).mode & 0o777;
  assert.equal(mode, 0o600);
});

test('maskRequestHost: the sandbox sees the masked Host with the port filled in', opt, async () => {
  const r = await request(gw.port, { headers: { ...routeHeaders(sbx), 'e2b-traffic-access-token': sbx.trafficAccessToken } });
  assert.equal(r.status, 200);
  assert.match(r.body, new RegExp(`^host=masked\\.example:${PORT}\\|`));
  // Without a mask: localhost, as before.
  assert.match((await request(gw.port, { headers: routeHeaders(open) })).body, /^host=localhost\|/);
});

test('maskRequestHost and allowPublicTraffic: bad values are refused with a 400 naming them', opt, async () => {
  for (const [network, re] of [
    [{ maskRequestHost: 'bad host' }, /maskRequestHost/],
    [{ maskRequestHost: 'a'.repeat(300) }, /maskRequestHost/],
    [{ maskRequestHost: 'x.example:99999' }, /maskRequestHost/],
    [{ maskRequestHost: 'x.example/${PORT}' }, /maskRequestHost/],
    [{ maskRequestHost: 7 }, /maskRequestHost/],
    [{ allowPublicTraffic: 'no' }, /allowPublicTraffic/],
  ]) {
    const r = await fetch(`${gw.url}/sandboxes`, { method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({ templateID: 'base', network }) });
    assert.equal(r.status, 400, JSON.stringify(network));
    assert.match((await r.json()).message, re);
  }
});

async function previewUrl(id, port, expiresInSeconds, key = TEST_API_KEY) {
  return await fetch(`${gw.url}/sandboxes/${id}/preview-url`, { method: 'POST',
    headers: { 'X-API-KEY': key, 'Content-Type': 'application/json' }, body: JSON.stringify({ port, expiresInSeconds }) });
}

test('preview URL: the link sets a cookie and redirects; both open the port until expiry; forged ones are refused', opt, async () => {
  const res = await previewUrl(sbx.sandboxId, PORT, 3);
  assert.equal(res.status, 201);
  const { url, expiresAt } = await res.json();
  assert.ok(Date.parse(expiresAt) > Date.now());
  const u = new URL(url);
  assert.equal(u.hostname, `${PORT}-${sbx.sandboxId}.localhost`);
  assert.equal(u.port, String(gw.port));
  const host = u.host;
  const link = u.pathname + u.search;
  // First visit: 302 to the same URL without the parameter, with the cookie.
  const first = await request(gw.port, { host, path: link.replace('/?', '/page?a=1&') });
  assert.equal(first.status, 302);
  assert.equal(first.headers.location, '/page?a=1');
  const setCookie = first.headers['set-cookie'][0];
  assert.match(setCookie, /^coppice_preview=\d+\.[0-9a-f]{64}; Path=\/; Max-Age=\d; HttpOnly; SameSite=Lax$/);
  const cookie = setCookie.split(';')[0];
  const withCookie = await request(gw.port, { host, path: '/page?a=1', headers: { Cookie: `other=1; ${cookie}` } });
  assert.equal(withCookie.status, 200);
  assert.match(withCookie.body, new RegExp(`^host=masked\\.example:${PORT}\\|`));
  // Without it: the traffic token rule.
  assert.equal((await request(gw.port, { host, path: '/' })).status, 403);
  // Forged: another signature, another port, another sandbox.
  const value = cookie.split('=')[1];
  const forged = value.slice(0, -1) + (value.endsWith('0') ? '1' : '0');
  assert.equal((await request(gw.port, { host, path: `/?coppice_preview=${forged}` })).status, 403);
  assert.equal((await request(gw.port, { host, headers: { Cookie: `coppice_preview=${forged}` } })).status, 403);
  const later = String(Number(value.split('.')[0]) + 1000) + '.' + value.split('.')[1];
  assert.equal((await request(gw.port, { host, headers: { Cookie: `coppice_preview=${later}` } })).status, 403);
  assert.equal((await request(gw.port, { host: `${PORT + 1}-${sbx.sandboxId}.localhost`, headers: { Cookie: cookie } })).status, 403);
  // Expired.
  await sleep(Math.max(0, Date.parse(expiresAt) - Date.now()) + 1100);
  const expired = await request(gw.port, { host, headers: { Cookie: cookie } });
  assert.equal(expired.status, 403);
  assert.match(JSON.parse(expired.body).message, /expired/);
  assert.equal((await request(gw.port, { host, path: link })).status, 403);
});

test('preview URL: bad requests', opt, async () => {
  for (const [port, exp] of [[0, 60], [65536, 60], [49983, 60], ['80', 60], [PORT, 0], [PORT, 7 * 86400 + 1], [PORT, 1.5]]) {
    const r = await previewUrl(sbx.sandboxId, port, exp);
    assert.equal(r.status, 400, `${port} ${exp}`);
    assert.match((await r.json()).message, /port|expiresInSeconds/);
  }
  assert.equal((await previewUrl('a'.repeat(20), PORT, 60)).status, 404);
  assert.equal((await previewUrl(sbx.sandboxId, PORT, 60, 'e2b_' + '0'.repeat(40))).status, 401);
});

test('coppice sandbox preview prints a URL that opens the port', opt, async () => {
  const cli = path.join(path.dirname(gatewayBin), 'coppice');
  const url = execFileSync(cli, ['sandbox', 'preview', sbx.sandboxId, String(PORT), '--expires', '5m'],
    { encoding: 'utf8', env: { ...process.env, E2B_API_URL: gw.url, COPPICE_API_URL: gw.url, E2B_API_KEY: TEST_API_KEY, COPPICE_API_KEY: TEST_API_KEY } }).trim();
  const u = new URL(url);
  const r = await request(gw.port, { host: u.host, path: u.pathname + u.search });
  assert.equal(r.status, 302);
  assert.throws(() => execFileSync(cli, ['sandbox', 'preview', sbx.sandboxId, String(PORT), '--expires', 'soon'],
    { stdio: 'pipe', env: { ...process.env, COPPICE_API_URL: gw.url, COPPICE_API_KEY: TEST_API_KEY } }), /--expires/);
});

// ---- TLS ----

function makeCerts(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=coppice test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  run('req', ...ec, '-keyout', 'gw.key', '-out', 'gw.csr', '-subj', '/CN=coppice.test');
  fs.writeFileSync(path.join(dir, 'ext.cnf'),
    'subjectAltName=DNS:coppice.test,DNS:*.coppice.test,DNS:api.coppice.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  run('x509', '-req', '-in', 'gw.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'gw.pem', '-days', '2',
    '-extfile', 'ext.cnf');
}

// Loaded with --import into the SDK's process: *.coppice.test is 127.0.0.1,
// every other name fails without a query.
const PRELOAD = `
import dns from 'node:dns';
import net from 'node:net';
function answer(host, opts, cb) {
  if (typeof opts === 'function') { cb = opts; opts = {}; }
  if (typeof opts === 'number') opts = { family: opts };
  opts ||= {};
  const literal = net.isIP(host);
  if (!literal && !/(^|\\.)coppice\\.test$/i.test(host)) {
    const e = new Error('test resolver: no DNS for ' + host);
    e.code = 'ENOTFOUND';
    return process.nextTick(cb, e);
  }
  if (!literal) globalThis.__lookups = (globalThis.__lookups || 0) + 1;
  const address = literal ? host : '127.0.0.1', family = literal || 4;
  if (opts.all) return process.nextTick(cb, null, [{ address, family }]);
  process.nextTick(cb, null, address, family);
}
dns.lookup = answer;
dns.promises.lookup = (host, opts) => new Promise((res, rej) => answer(host, opts || {}, (e, a, f) => e ? rej(e) : res(opts && opts.all ? a : { address: a, family: f })));
`;

// The SDK in its default mode: no apiUrl, sandboxUrl or debug; E2B_DOMAIN only.
const CHILD = `
import { Sandbox } from '${sdkName}';
const out = {};
const sbx = await Sandbox.create({ network: { allowPublicTraffic: false } });
out.envdUrl = sbx.envdApiUrl;
out.stdout = (await sbx.commands.run('echo over-tls')).stdout.trim();
await sbx.files.write('/tmp/tls.txt', 'tls file');
out.read = await sbx.files.read('/tmp/tls.txt');
const dl = await sbx.downloadUrl('/tmp/tls.txt');
out.downloadUrl = dl;
const r = await fetch(dl);
out.download = [r.status, await r.text()];
const up = await sbx.uploadUrl('/tmp/up.txt');
const form = new FormData();
form.append('file', new Blob(['uploaded over tls']), 'up.txt');
out.upload = (await fetch(up, { method: 'POST', body: form })).status;
out.uploaded = await sbx.files.read('/tmp/up.txt');
await sbx.files.write('/tmp/echo_host.py', process.env.ECHO_SERVER);
await sbx.commands.run('python3 /tmp/echo_host.py 8000', { background: true, timeoutMs: 0 });
for (let i = 0; ; i++) {
  const r = await fetch('https://' + sbx.getHost(8000) + '/', { headers: { 'e2b-traffic-access-token': sbx.trafficAccessToken } });
  if (r.status === 200) break;
  if (i > 200) throw new Error('echo server did not start: ' + r.status);
  await new Promise((res) => setTimeout(res, 50));
}
out.sandboxId = sbx.sandboxId;
out.trafficAccessToken = sbx.trafficAccessToken;
out.lookups = globalThis.__lookups;
console.log(JSON.stringify(out));
// The background command's stream would keep this process alive; the server goes on without it.
process.exit(0);
`;

test('TLS: the unmodified SDK in its default mode, WebSocket-style upgrade, hostile clients', opt, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-tls-'));
  let tgw;
  try {
    makeCerts(dir);
    const ca = fs.readFileSync(path.join(dir, 'ca.pem'));
    // A bad key: the gateway refuses to start, in one line.
    const bad = spawn(gatewayBin, ['--listen', '127.0.0.1:0', '--state-dir', path.join(dir, 'bad-state'),
      '--tls-cert', path.join(dir, 'gw.pem'), '--tls-key', path.join(dir, 'ca.key')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    bad.stderr.on('data', (d) => { err += d; });
    const code = await new Promise((r) => bad.on('exit', r));
    assert.notEqual(code, 0);
    assert.match(err, /^coppiced: TLS: --tls-key .*does not match the certificate/);
    assert.equal(err.trim().split('\n').length, 1);

    const port = await freePort();
    const domain = `coppice.test:${port}`;
    tgw = await startGateway({ port, tls: { ca, host: 'api.coppice.test' },
      extraArgs: ['--domain', domain, '--tls-cert', path.join(dir, 'gw.pem'), '--tls-key', path.join(dir, 'gw.key'),
        '--header-timeout', '2'] });
    fs.writeFileSync(path.join(dir, 'preload.mjs'), PRELOAD);
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: path.join(dir, 'ca.pem'), E2B_DOMAIN: domain, E2B_API_KEY: TEST_API_KEY,
      ECHO_SERVER: SERVER };
    for (const k of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_DEBUG', 'E2B_ACCESS_TOKEN']) delete env[k];
    // The child imports the SDK from this directory's node_modules.
    const childPath = path.join(import.meta.dirname, `.tls-child-${process.pid}.mjs`);
    fs.writeFileSync(childPath, CHILD);
    let out;
    try {
      out = JSON.parse(execFileSync(process.execPath, ['--import', path.join(dir, 'preload.mjs'), childPath], { env, encoding: 'utf8' }));
    } finally {
      fs.rmSync(childPath, { force: true });
    }
    assert.equal(out.envdUrl, `https://49983-${out.sandboxId}.${domain}`);
    assert.equal(out.stdout, 'over-tls');
    assert.equal(out.read, 'tls file');
    assert.match(out.downloadUrl, new RegExp(`^https://49983-${out.sandboxId}\\.coppice\\.test:${port}/files\\?`));
    assert.deepEqual(out.download, [200, 'tls file']);
    assert.equal(out.upload, 200);
    assert.equal(out.uploaded, 'uploaded over tls');
    assert.ok(out.lookups > 0, 'the SDK resolved its names through the test resolver');

    // A port of that sandbox over TLS (the child started the echo server
    // through the SDK): 403 without the token, 200 with it.
    const sandboxHost = `${PORT}-${out.sandboxId}.coppice.test`;
    const api = (p, init = {}) => tlsFetch(`${tgw.url}${p}`, { ...init, headers: { 'X-API-KEY': TEST_API_KEY, ...(init.headers || {}) } },
      { ca, host: 'api.coppice.test' });
    const noToken = await tlsFetch(`https://127.0.0.1:${port}/`, {}, { ca, host: sandboxHost });
    assert.equal(noToken.status, 403);
    const withToken = await tlsFetch(`https://127.0.0.1:${port}/`, { headers: { 'e2b-traffic-access-token': out.trafficAccessToken } },
      { ca, host: sandboxHost });
    assert.equal(withToken.status, 200);
    assert.match(await withToken.text(), /^host=localhost\|/);
    // A preview URL over TLS: https, and its cookie is Secure.
    const preview = await api(`/sandboxes/${out.sandboxId}/preview-url`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ port: PORT, expiresInSeconds: 60 }) });
    assert.equal(preview.status, 201);
    const purl = new URL((await preview.json()).url);
    assert.equal(purl.protocol, 'https:');
    assert.equal(purl.host, `${sandboxHost}:${port}`);
    const first = await tlsFetch(`https://127.0.0.1:${port}${purl.pathname}${purl.search}`, {}, { ca, host: sandboxHost });
    assert.equal(first.status, 302);
    assert.match(first.headers['set-cookie'][0], /; HttpOnly; SameSite=Lax; Secure$/);
    // An upgrade through TLS: bytes both ways, then close.
    const echoed = await new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: sandboxHost, ca }, () => {
        s.write(`GET /ws HTTP/1.1\r\nHost: ${sandboxHost}:${port}\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\n` +
          `e2b-traffic-access-token: ${out.trafficAccessToken}\r\n\r\n`);
      });
      let got = '';
      let sent = false;
      s.on('data', (d) => {
        got += d.toString('latin1');
        if (!sent && got.includes('\r\n\r\n')) {
          sent = true;
          s.write('ping through tls');
        }
        if (got.endsWith('ping through tls')) { s.end(); resolve(got); }
      });
      s.on('error', reject);
      setTimeout(() => reject(new Error('upgrade timed out: ' + got)), 10000).unref();
    });
    assert.match(echoed, /^HTTP\/1\.1 101 /);

    // Hostile: plain HTTP to the TLS port is closed; a handshake that never
    // finishes is dropped after the header timeout; the gateway stays up.
    const plain = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'));
      let got = '';
      s.on('data', (d) => { got += d.toString('latin1'); });
      s.on('close', () => resolve(got));
      s.on('error', () => {});
    });
    assert.doesNotMatch(plain, /^HTTP\/1\.1 200/);
    const t0 = Date.now();
    const slowClosed = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(Buffer.from([0x16, 0x03, 0x01])));
      s.on('close', () => resolve(Date.now() - t0));
      s.on('error', () => {});
      setTimeout(() => { s.destroy(); resolve(-1); }, 8000).unref();
    });
    assert.ok(slowClosed > 1500 && slowClosed < 6000, `slow handshake closed after ${slowClosed} ms`);
    const health = await api('/health');
    assert.equal(health.status, 200);
    // api.<domain> is the API; the SDK's signed URL names a sandbox.
    const list = await api('/v2/sandboxes');
    assert.equal(list.status, 200);
  } finally {
    await tgw?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
